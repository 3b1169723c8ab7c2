"""rsrag's settings: defaults, a TOML file, ``RSRAG_*`` environment variables and explicit options.

Precedence, highest first (an environment variable never overrides an explicit option or argument):

1. explicit values: command-line options (``rsrag --encoder X ...``) or ``load_settings(overrides=...)``;
2. environment variables: ``RSRAG_<SECTION>__<KEY>`` (``RSRAG_RETRIEVAL__TOP_K=8``), and ``RSRAG_HOME``;
3. the settings file: ``--settings FILE``, else ``$RSRAG_SETTINGS``, else ``$RSRAG_HOME/settings.toml`` when
   it exists (with no ``RSRAG_HOME``: ``settings.toml`` in the user's data directory for rsrag);
4. the defaults below.

Example settings file::

    home = "/data/rsrag"                  # stores, sessions, crops (RSRAG_HOME)

    [encoder]
    spec = "remoteclip:ViT-B-32"          # RSRAG_ENCODER__SPEC; unset: the bundled encoder
    batch_size = 32

    [store]
    path = "/data/rsrag/store"            # RSRAG_STORE__PATH
    tiling = "vit:448"

    [vlm]
    spec = "openai:qwen2.5-vl-7b@http://localhost:8000/v1"   # RSRAG_VLM__SPEC

    [budgets]
    max_steps = 10

    [retrieval]
    top_k = 5
    fast_threshold = 0.5

    [knowledge]
    name = "default"
    weaviate_url = "http://localhost:8080"   # RSRAG_KNOWLEDGE__WEAVIATE_URL
    weaviate_api_key = "..."                 # RSRAG_KNOWLEDGE__WEAVIATE_API_KEY
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from rsrag.tools.errors import ConfigError, RsragError
from rsrag.tools.indexing import DEFAULT_TILING
from rsrag.tools.store.location import rsrag_home

if TYPE_CHECKING:
    from rsrag.agent.interfaces.api import Analyst
    from rsrag.agent.context import Budgets

ENV_PREFIX = "RSRAG_"
ENV_SETTINGS_FILE = "RSRAG_SETTINGS"
"""Environment variable naming the settings file (``--settings`` wins over it)."""
SETTINGS_FILE_NAME = "settings.toml"

_file_data: ContextVar[dict[str, Any]] = ContextVar("rsrag_settings_file_data", default={})


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class EncoderSettings(_Section):
    """The image/text encoder: ``spec`` (``None``: the bundled offline encoder), batch size, torch device."""

    spec: str | None = None
    batch_size: int = Field(32, ge=1)
    device: str = "cpu"


class StoreSettings(_Section):
    """The embedded store folder (``None``: ``$RSRAG_HOME/store``) and the tiling used to index scenes."""

    path: Path | None = None
    tiling: str = DEFAULT_TILING

    @field_validator("tiling")
    @classmethod
    def _valid_tiling(cls, value: str) -> str:
        from rsrag.tools.tiling import parse_tiling

        try:
            parse_tiling(value)
        except RsragError as exc:
            raise ValueError(str(exc)) from None
        return value


class VlmSettings(_Section):
    """The chat model: ``rule``, ``openai:MODEL[@URL]`` or ``transformers:PATH`` (see :mod:`rsrag.agent.models.backends`)."""

    spec: str = "rule"

    @field_validator("spec")
    @classmethod
    def _valid_spec(cls, value: str) -> str:
        from rsrag.agent.models.backends import BACKENDS

        kind, _, rest = value.strip().partition(":")
        if not ((kind == "rule" and not rest) or (kind in ("openai", "transformers") and rest.split("@")[0])):
            raise ValueError(f"unknown VLM spec {value!r}; use one of: {', '.join(BACKENDS)}")
        return value.strip()


class BudgetSettings(_Section):
    """Per-question limits (see :class:`rsrag.agent.context.Budgets`)."""

    max_steps: int = Field(10, ge=1)
    max_zoom_pixels: int = Field(64 * 2048 * 2048, ge=1)
    max_seconds: float = Field(300.0, gt=0)
    max_zoom_side: int = Field(1024, ge=16)


class RetrievalSettings(_Section):
    """Search settings: regions a search returns, and the fast-path confidence threshold."""

    top_k: int = Field(5, ge=1)
    fast_threshold: float = Field(0.5, ge=0.0, le=1.0)


class KnowledgeSettings(_Section):
    """The knowledge base: its name (the agent's lookups and slow path use it), and a Weaviate server
    holding it (``None``: the embedded store; the MCP server's ``lookup_knowledge`` reads Weaviate when set)."""

    name: str = "default"
    weaviate_url: str | None = None
    weaviate_api_key: SecretStr | None = None

    @field_validator("weaviate_url")
    @classmethod
    def _valid_url(cls, value: str | None) -> str | None:
        if value is not None and value.strip() and not value.strip().startswith(("http://", "https://")):
            raise ValueError(f"{value!r} is not an http(s) URL")
        return value.strip() or None if value is not None else None


class PathSettings(_Section):
    """Where chat sessions and zoom crops are kept (``None``: under the home folder)."""

    sessions: Path | None = None
    crops: Path | None = None


class _FileSource(PydanticBaseSettingsSource):
    """The values of the settings file being loaded (read by :func:`load_settings`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get())


class Settings(BaseSettings):
    """All of rsrag's settings (build them with :func:`load_settings`)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      validate_default=True)

    home: Path | None = None
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    vlm: VlmSettings = Field(default_factory=VlmSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    paths: PathSettings = Field(default_factory=PathSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    # --- derived values ------------------------------------------------------------------------------

    @property
    def home_dir(self) -> Path:
        """The home folder: ``home`` when set, else ``$RSRAG_HOME`` or the user's data directory."""
        return (self.home or rsrag_home()).expanduser()

    @property
    def store_path(self) -> Path:
        """The embedded store's folder."""
        return (self.store.path or self.home_dir / "store").expanduser().absolute()

    @property
    def sessions_path(self) -> Path:
        """The SQLite file of chat sessions."""
        return (self.paths.sessions or self.home_dir / "sessions.sqlite").expanduser()

    @property
    def crops_dir(self) -> Path:
        """The folder zoom crops are written to (one sub-folder per thread)."""
        return (self.paths.crops or self.home_dir / "crops").expanduser()

    def make_budgets(self) -> Budgets:
        """The per-question :class:`~rsrag.agent.context.Budgets` these settings describe."""
        from rsrag.agent.context import Budgets

        return Budgets(**self.budgets.model_dump())

    def analyst(self, **kwargs: Any) -> Analyst:
        """An :class:`~rsrag.agent.interfaces.api.Analyst` configured by these settings (``kwargs`` override, e.g. ``model``)."""
        from rsrag.agent.interfaces.api import Analyst

        options: dict[str, Any] = dict(
            vlm=self.vlm.spec, encoder=self.encoder.spec, store=self.store_path, tiling=self.store.tiling,
            sessions=self.sessions_path, crop_dir=self.crops_dir, budgets=self.make_budgets(),
            top_k=self.retrieval.top_k, fast_threshold=self.retrieval.fast_threshold, knowledge=self.knowledge.name,
        )
        return Analyst(**{**options, **kwargs})


def default_settings_file() -> Path | None:
    """The settings file used when none is given: ``$RSRAG_SETTINGS``, else ``$RSRAG_HOME/settings.toml`` if present."""
    env = os.environ.get(ENV_SETTINGS_FILE, "").strip()
    if env:
        return Path(env).expanduser()
    candidate = rsrag_home() / SETTINGS_FILE_NAME
    return candidate if candidate.is_file() else None


def read_settings_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The contents of a TOML settings file.

    Raises:
        ConfigError: the file is missing, unreadable or not valid TOML (the message names the file and line).
    """
    file = Path(path).expanduser()
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"settings file {file} does not exist") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"settings file {file} cannot be read ({type(exc).__name__})") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"settings file {file} is not valid TOML: {exc}") from None


def _nest(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``{"encoder.spec": "x", "home": h}`` -> ``{"encoder": {"spec": "x"}, "home": h}``; ``None`` values are dropped."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        *parents, leaf = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load_settings(
    file: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Load the settings (see the module docstring for the precedence).

    Args:
        file: a TOML settings file (``None``: :func:`default_settings_file`).
        overrides: explicit values by dotted key, e.g. ``{"encoder.spec": "...", "retrieval.top_k": 8}``;
            ``None`` values are ignored (an option that was not given).

    Raises:
        ConfigError: the file cannot be read, or a value is invalid; the message names the key and where
            the value came from (option, environment variable or file).
    """
    path = Path(file).expanduser() if file is not None else default_settings_file()
    data = read_settings_file(path) if path is not None else {}
    given = _nest(overrides or {})
    token = _file_data.set(data)
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, given, data, path)) from None
    except SettingsError as exc:  # e.g. RSRAG_ENCODER=abc: a whole section must be JSON
        raise ConfigError(f"{exc} (set one key with {ENV_PREFIX}<SECTION>__<KEY>, or give the section as JSON)") from None
    finally:
        _file_data.reset(token)


def _lookup(data: Mapping[str, Any], keys: tuple[str, ...]) -> bool:
    node: Any = data
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return False
        node = node[key]
    return True


def _describe(exc: ValidationError, given: dict[str, Any], data: dict[str, Any], path: Path | None) -> str:
    """One line per invalid value: its key, the problem, and where it came from."""
    lines = []
    for error in exc.errors():
        keys = tuple(str(p) for p in error["loc"])
        key = ".".join(keys)
        env = ENV_PREFIX + "__".join(keys).upper()
        if error["type"] == "extra_forbidden":
            where = f"settings file {path}" if _lookup(data, keys) else "options"
            lines.append(f"unknown setting {key!r} (in {where}); see `rsrag settings` for the known keys")
            continue
        if _lookup(given, keys):
            where = "an explicit option"
        elif env in {k.upper() for k in os.environ}:
            where = f"environment variable {env}"
        elif path is not None and _lookup(data, keys):
            where = f"settings file {path}"
        else:
            where = "the default"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"invalid setting {key!r} (from {where}): {message}")
    return "; ".join(lines)
