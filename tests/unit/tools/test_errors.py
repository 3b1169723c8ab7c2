"""The error tree: every class has a kind, the docstring's drawing matches the classes, and one mapping
turns a kind into the CLI's exit status, the HTTP status, the MCP error and the model's message."""

from __future__ import annotations

import re

import pytest

import rsrag.tools.errors as errors
from rsrag.tools.errors import (
    KIND_POLICIES,
    ConfigError,
    ErrorKind,
    RsragError,
    UnknownEncoderError,
    WindowError,
    cli_message,
    error_kind,
    exit_status,
    http_status,
    mcp_message,
    model_message,
)


def _classes() -> dict[str, type[RsragError]]:
    return {name: obj for name, obj in vars(errors).items()
            if isinstance(obj, type) and issubclass(obj, RsragError)}


def test_the_docstring_tree_is_the_class_tree() -> None:
    drawn = {}
    for line in (errors.__doc__ or "").splitlines():
        m = re.match(r"^\s*(?:[│ ]*[├└]── )?(\w+Error) \[(\w+)\](?: \+ (\w+))?$", line)
        if m:
            drawn[m.group(1)] = (m.group(2), m.group(3))
    classes = _classes()
    assert set(drawn) == set(classes)
    for name, cls in classes.items():
        kind, builtin = drawn[name]
        assert cls.kind.value == kind, name
        if builtin:
            assert issubclass(cls, getattr(__import__("builtins"), builtin)), name


def test_every_kind_has_one_policy() -> None:
    assert set(KIND_POLICIES) == set(ErrorKind)
    assert {p.exit_status for k, p in KIND_POLICIES.items() if k is not ErrorKind.INTERNAL} == {2}


def test_the_model_is_told_to_fix_arguments_only_when_it_can() -> None:
    assert "Correct the arguments" in model_message(WindowError("box [0, 0, 9, 9] is outside the image"))
    for exc in (UnknownEncoderError("unknown encoder 'nope'"), ConfigError("bad setting"),
                errors.CheckpointMismatchError("heads do not fit"), errors.StoreUnavailableError("down")):
        text = model_message(exc)
        assert "Correct the arguments" not in text and "do not" in text, text


def test_one_mapping_for_cli_http_and_mcp() -> None:
    exc = errors.UnknownImageError("no image 'x'")
    assert (error_kind(exc), exit_status(exc), http_status(exc)) == (ErrorKind.ARGUMENT, 2, 404)
    assert cli_message(exc) == "error: no image 'x'" and mcp_message(exc) == "bad argument: no image 'x'"
    assert http_status(ConfigError("x")) == 500 and http_status(errors.ThreadBusyError("x")) == 409
    assert cli_message(ConfigError("line one\nline two")) == "configuration error: line one line two"
    bug = KeyError("oops")
    assert exit_status(bug) == 1 and "bug" in cli_message(bug) and "--debug" in cli_message(bug)


def test_pydantic_argument_errors_are_argument_errors() -> None:
    from pydantic import BaseModel, ValidationError

    class Args(BaseModel):
        top_k: int

    with pytest.raises(ValidationError) as info:
        Args(top_k="many")
    assert error_kind(info.value) is ErrorKind.ARGUMENT


def test_old_import_paths_still_work() -> None:
    from rsrag.agent.interfaces.web.errors import UnknownImageError
    from rsrag.agent.models.vlm.family import VLMInputError

    assert UnknownImageError is errors.UnknownImageError and VLMInputError is errors.VLMInputError
