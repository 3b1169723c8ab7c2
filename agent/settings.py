"""rsrag's settings: the one schema of every setting, its defaults, a TOML file, ``RSRAG_*`` variables, options.

Every default is declared here and nowhere else: the API, the CLI, the web workspace, the MCP server, the
workspace and the graph's runtime context all take a :class:`Settings` (``tools/`` functions take explicit
arguments).

Precedence, highest first (an environment variable never overrides an explicit option or argument):

1. explicit values: command-line options (``rsrag --encoder X ...``) or ``load_settings(overrides=...)``;
2. environment variables: ``RSRAG_<SECTION>__<KEY>`` (``RSRAG_RETRIEVAL__TOP_K=8``), and ``RSRAG_HOME``;
3. the settings file: ``--settings FILE``, else ``$RSRAG_SETTINGS``, else ``$RSRAG_HOME/settings.toml`` when
   it exists (with no ``RSRAG_HOME``: ``settings.toml`` in the user's data directory for rsrag);
4. the defaults below.

An unknown key in the file, an unknown ``RSRAG_*`` variable (see :data:`OTHER_VARIABLES` for the few that
are not settings) and an invalid value (including an encoder or VLM spec that names nothing) are refused
when the settings load, with one line naming the key or variable and where it came from.

Example settings file::

    home = "/data/rsrag"                  # stores, sessions, crops (RSRAG_HOME)

    [encoder]
    spec = "remoteclip:ViT-B-32"          # RSRAG_ENCODER__SPEC; unset: the bundled encoder
    batch_size = 8                        # windows per forward pass (on CPU as fast as 32, 320 MiB lower peak; raise it on a GPU)
    device = "cpu"                        # or cuda, cuda:1, mps
    precision = "auto"                    # image passes: fp16 on CUDA, else float32; "bfloat16": ~1.7x on AVX512-BF16/AMX CPUs

    [store]
    path = "/data/rsrag/store"            # RSRAG_STORE__PATH
    tiling = "pyramid"                    # the default; a flat tiling: "vit:448", "grid:256:overlap=0.5"

    [pyramid]
    beam = 12                             # regions a search expands per phrase at each level
    background_fill = "serve"             # fill the finest level in the background: serve | always | never
    complete_below = 512                  # a search first encodes the rest when at most this many are left
    settle_below = 512                    # an uncertain search encodes the rest when at most this many are left

    [vlm]
    spec = "openai:qwen2.5-vl-7b@http://localhost:8000/v1"   # RSRAG_VLM__SPEC

    [budgets]
    max_steps = 10

    [retrieval]
    top_k = 5
    fast_threshold = 0.5
    refine = 16                              # candidate windows re-seen through half-size windows (0: off)
    concept_match = 0.7                      # a synonym is searched as its nearest labelled class too (>1: off)

    [knowledge]
    name = "default"
    weaviate_url = "http://localhost:8080"   # RSRAG_KNOWLEDGE__WEAVIATE_URL
    weaviate_api_key = "..."                 # RSRAG_KNOWLEDGE__WEAVIATE_API_KEY

    [trace]
    enabled = true                           # RSRAG_TRACE__ENABLED
    redact = "prompts,answers"               # blanked in exports

    [cache]
    path = "/scratch/rsrag-cache"            # converted PNG/JPEG/striped TIFF scenes (RSRAG_CACHE__PATH)
    max_gb = 50                              # least recently used entries are evicted above this
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from rsrag.tools.encoders.spec import DEFAULT_BATCH_SIZE, DEFAULT_PRECISION
from rsrag.tools.errors import ConfigError, RsragError
from rsrag.tools.store.location import rsrag_home

if TYPE_CHECKING:
    from rsrag.agent.interfaces.api import Analyst
    from rsrag.tools.scene_cache import SceneCache
    from rsrag.tools.store.weaviate import WeaviateStore

__all__ = [
    "ENV_PREFIX", "ENV_SETTINGS_FILE", "OTHER_VARIABLES", "BudgetSettings", "Budgets", "CacheSettings", "EncoderSettings",
    "KnowledgeSettings", "PathSettings", "RetrievalSettings", "Settings", "StoreSettings", "TraceSettings",
    "VlmSettings", "default_settings_file", "env_name", "flatten", "load_settings", "read_settings_file", "setting_keys",
]

ENV_PREFIX = "RSRAG_"
ENV_SETTINGS_FILE = "RSRAG_SETTINGS"
"""Environment variable naming the settings file (``--settings`` wins over it)."""
SETTINGS_FILE_NAME = "settings.toml"

#: ``RSRAG_*`` variables that are not settings keys (every other ``RSRAG_*`` variable must name a key).
OTHER_VARIABLES: dict[str, str] = {
    ENV_SETTINGS_FILE: "the settings file",
    "RSRAG_WEAVIATE_URL": "a Weaviate server for the store conformance tests",
    "RSRAG_WEAVIATE_API_KEY": "its API key",
    "RSRAG_TEST_ARTIFACTS": "where browser tests keep screenshots",
}

REDACTABLE = ("prompts", "answers")
_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?|mps|xpu(:\d+)?)$")

_file_data: ContextVar[dict[str, Any] | None] = ContextVar("rsrag_settings_file_data", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EncoderSettings(_Section):
    """The image/text encoder: ``spec`` (``None``: the bundled offline encoder), batch size, torch device and the
    precision of image forward passes (:data:`rsrag.tools.encoders.spec.PRECISIONS`).

    The spec is checked when the settings load (see :func:`rsrag.tools.encoders.spec.check_spec`), so a
    misspelt ``--encoder`` fails before any work.
    """

    spec: str | None = None
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)
    device: str = "cpu"
    precision: str = DEFAULT_PRECISION

    @field_validator("spec")
    @classmethod
    def _valid_spec(cls, value: str | None) -> str | None:
        from rsrag.tools.encoders.spec import check_spec

        if value is None or not value.strip():
            return None
        try:
            check_spec(value)
        except RsragError as exc:
            raise ValueError(str(exc)) from None
        return value.strip()

    @field_validator("precision")
    @classmethod
    def _valid_precision(cls, value: str) -> str:
        from rsrag.tools.encoders.spec import PRECISIONS

        value = value.strip().lower()
        if value not in PRECISIONS:
            raise ValueError(f"unknown precision {value!r}; use one of {', '.join(PRECISIONS)}")
        return value

    @field_validator("device")
    @classmethod
    def _valid_device(cls, value: str) -> str:
        if not _DEVICE.match(value.strip()):
            raise ValueError(f"unknown torch device {value!r}; use cpu, cuda, cuda:N, mps or xpu")
        return value.strip()


class StoreSettings(_Section):
    """The embedded store folder (``None``: ``$RSRAG_HOME/store``) and the tiling used to index scenes."""

    path: Path | None = None
    tiling: str = "pyramid"

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
    """Limits of one question.

    Attributes:
        max_steps: model calls before the agent must answer with what it has.
        max_zoom_pixels: full-resolution pixels all zooms of a question may read together.
        max_seconds: wall time before the agent must answer with what it has.
        max_zoom_side: longest side, in pixels, of a crop sent to the model.
    """

    max_steps: int = Field(10, ge=1)
    max_zoom_pixels: int = Field(64 * 2048 * 2048, ge=1)
    max_seconds: float = Field(300.0, gt=0)
    max_zoom_side: int = Field(1024, ge=16)


Budgets = BudgetSettings
"""The per-question limits (the ``[budgets]`` section), by the name the graph uses."""


class RetrievalSettings(_Section):
    """Search settings: regions a search returns, the fast-path confidence threshold, and how many of a
    target's strongest candidate windows are re-seen through windows of half the size (``refine``; small
    objects, see :mod:`rsrag.tools.refine`; 0 turns it off; pyramid indexes only), and the text similarity
    from which a phrase is also searched as the labelled class it names (``concept_match``, synonyms; see
    :meth:`rsrag.tools.calibration.PresenceModel.related_concept`; above 1 turns it off)."""

    top_k: int = Field(5, ge=1)
    fast_threshold: float = Field(0.5, ge=0.0, le=1.0)
    refine: int = Field(16, ge=0)
    concept_match: float = Field(0.7, ge=0.0, le=1.1)


class PyramidSettings(_Section):
    """The pyramid index (``store.tiling = "pyramid..."``, see :mod:`rsrag.tools.pyramid`): regions a search
    expands per query at each level (``beam``, and at most ``expand`` with those above the threshold),
    windows sampled to estimate an incomplete level's statistics, and when the finest level is filled in
    the background: ``serve`` (only by ``rsrag serve``), ``always`` (also ``ask``/``chat``) or ``never``.
    ``complete_below``: a search on a scene whose finest level has at most this many windows not encoded yet
    (a small scene, or one mostly encoded) encodes them first and searches the whole level instead of
    descending (0: never): every answer on a small scene then comes from a full search. ``settle_below``: a
    search whose finding is ``uncertain`` while part of the finest level is not encoded yet encodes the rest
    and searches again, when at most this many windows are left (0: never), so that "uncertain" is not merely
    "not looked at yet"."""

    beam: int = Field(12, ge=1)
    expand: int = Field(24, ge=1)
    sample: int = Field(24, ge=4)
    background_fill: Literal["serve", "always", "never"] = "serve"
    complete_below: int = Field(512, ge=0)
    settle_below: int = Field(512, ge=0)


class KnowledgeSettings(_Section):
    """The knowledge base: its name (the agent's lookups and slow path use it), and a Weaviate server
    holding it (``None``: the embedded store under ``store.path``). With a server set, every reader and writer
    of the knowledge base uses it: the agent's ``lookup_knowledge`` and slow path, ``rsrag kb ...`` and the MCP
    server (see :meth:`Settings.knowledge_store`); image patches stay in the embedded store."""

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


class TraceSettings(_Section):
    """The audit trace of every run (see :mod:`rsrag.agent.trace`).

    Attributes:
        enabled: record a trace of every run.
        sha256: also record the full SHA-256 of the scene file (reads the whole file once per scene).
        redact: comma-separated parts blanked in exports: ``prompts`` (questions, feedback, model inputs)
            and/or ``answers`` (answer texts, the model's text replies).
        otel: OpenTelemetry exporter, ``console`` or ``otlp`` (empty: none, unless ``OTEL_TRACES_EXPORTER``).
        path: trace database (``None``: the sessions file, in its own tables).
        hmac_key: a secret that signs every chain head as it is written (``RSRAG_TRACE__HMAC_KEY``); with it,
            ``rsrag trace verify`` detects a rewrite of the whole chain by someone without the key.
    """

    enabled: bool = True
    sha256: bool = False
    redact: str = ""
    otel: Literal["", "console", "otlp"] = ""
    path: Path | None = None
    hmac_key: SecretStr | None = None

    @field_validator("redact")
    @classmethod
    def _valid_redact(cls, value: str) -> str:
        parts = [p.strip().lower() for p in value.split(",") if p.strip()]
        unknown = sorted(set(parts) - set(REDACTABLE))
        if unknown:
            raise ValueError(f"unknown redaction {', '.join(unknown)}: use {' and/or '.join(REDACTABLE)}")
        return ",".join(parts)

    def redactions(self) -> set[str]:
        """The parts to redact."""
        return {p for p in self.redact.split(",") if p}


class CacheSettings(_Section):
    """The scene cache (:mod:`rsrag.tools.scene_cache`): where PNG, JPEG, striped TIFF ... sources are kept
    converted (``None``: ``$RSRAG_HOME/cache``), and its size limit in GiB (least recently used entries go)."""

    path: Path | None = None
    max_gb: float = Field(50.0, gt=0)


class _FileSource(PydanticBaseSettingsSource):
    """The values of the settings file being loaded (read by :func:`load_settings`)."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_file_data.get() or {})


class Settings(BaseSettings):
    """All of rsrag's settings (build them with :func:`load_settings`; immutable, safe to share)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid",
                                      validate_default=True, frozen=True)

    home: Path | None = None
    encoder: EncoderSettings = Field(default_factory=EncoderSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    vlm: VlmSettings = Field(default_factory=VlmSettings)
    budgets: BudgetSettings = Field(default_factory=BudgetSettings)
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings)
    pyramid: PyramidSettings = Field(default_factory=PyramidSettings)
    knowledge: KnowledgeSettings = Field(default_factory=KnowledgeSettings)
    paths: PathSettings = Field(default_factory=PathSettings)
    trace: TraceSettings = Field(default_factory=TraceSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)

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

    @property
    def trace_path(self) -> Path:
        """The trace database: ``trace.path``, else the sessions file."""
        return (self.trace.path or self.sessions_path).expanduser()

    def scene_cache(self) -> SceneCache:
        """The scene cache: ``cache.path`` (else ``$RSRAG_HOME/cache``), limited to ``cache.max_gb``."""
        from rsrag.tools.scene_cache import SceneCache

        root = (self.cache.path or self.home_dir / "cache").expanduser().absolute()
        return SceneCache(root, max_bytes=int(self.cache.max_gb * (1 << 30)))

    def knowledge_store(self) -> WeaviateStore | None:
        """The Weaviate store ``knowledge.weaviate_url`` names (not connected yet), or ``None`` when the
        knowledge base lives in the embedded store with the patches."""
        k = self.knowledge
        if not k.weaviate_url:
            return None
        from rsrag.tools.store.weaviate import WeaviateStore

        return WeaviateStore(k.weaviate_url, k.weaviate_api_key.get_secret_value() if k.weaviate_api_key else None)

    def make_budgets(self) -> Budgets:
        """The per-question limits (the ``budgets`` section)."""
        return self.budgets

    def replace(self, overrides: Mapping[str, Any]) -> Settings:
        """These settings with some keys changed (dotted keys, e.g. ``{"retrieval.top_k": 8}``), validated."""
        data = self.model_dump()
        for key, value in _nest(overrides).items():
            if isinstance(value, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **value}
            else:
                data[key] = value
        try:
            return Settings.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(_describe(exc, _nest(overrides), {}, None)) from None

    def analyst(self, **kwargs: Any) -> Analyst:
        """An :class:`~rsrag.agent.interfaces.api.Analyst` configured by these settings (``kwargs``: ``model``)."""
        from rsrag.agent.interfaces.api import Analyst

        return Analyst(self, **kwargs)


def setting_keys() -> list[str]:
    """Every settings key, dotted (``encoder.spec``, ..., ``home``), in schema order."""
    keys: list[str] = []
    for name, field in Settings.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, _Section):
            keys += [f"{name}.{sub}" for sub in annotation.model_fields]
        else:
            keys.append(name)
    return keys


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested settings data as ``{dotted key: value}`` (``{"encoder": {"spec": x}}`` -> ``{"encoder.spec": x}``)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def env_name(key: str) -> str:
    """The environment variable of a dotted settings key (``retrieval.top_k`` -> ``RSRAG_RETRIEVAL__TOP_K``)."""
    return ENV_PREFIX + key.replace(".", "__").upper()


def _check_environment(environ: Mapping[str, str]) -> None:
    """Refuse an ``RSRAG_*`` variable that names no setting (as an unknown key in the file is refused)."""
    keys = setting_keys()
    known = {env_name(k) for k in keys} | {ENV_PREFIX + name.upper() for name in Settings.model_fields}
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(ENV_PREFIX) or upper in known or upper in OTHER_VARIABLES:
            continue
        close = difflib.get_close_matches(upper, sorted(known | set(OTHER_VARIABLES)), n=1, cutoff=0.75)
        hint = f"; did you mean {close[0]}?" if close else ""
        raise ConfigError(f"unknown environment variable {name}{hint} (settings are {ENV_PREFIX}<SECTION>__<KEY>; "
                          "`rsrag settings` lists them)")


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
        ConfigError: the file cannot be read, a value is invalid (the message names the key and where the
            value came from: option, environment variable or file), or an ``RSRAG_*`` variable names no setting.
    """
    _check_environment(os.environ)
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
