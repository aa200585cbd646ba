"""Schemas (pydantic) of the metadata the importers read and of the options `dataset import` and `dataset export` take.

Every file of a foreign dataset that describes the rest (LeRobot's meta/info.json, its episode and task tables,
robomimic's attributes, the custom data of a bag robolearn exported) is validated here, in one place, before a
reader trusts it, and every rejection is one `FormatError` line naming the file, the key (or table row) and what
was expected, e.g.::

    lr3/meta/info.json: `fps`: expected a number greater than 0, got 'ten'
    lr3/meta/episodes/chunk-000/file-000.parquet: row 2: `episode_index` 1 appears in 2 rows

Options given on the command line are validated the same way (`import_options`, `export_options`), as
`UserError`s naming the option. Values are strict: text is never read as a number, a bool never as an integer.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from robolearn.datasets.formats.common import FormatError
from robolearn.datasets.replay_buffer import key_name_problem
from robolearn.errors import UserError

NonNegativeInt = Annotated[int, Field(ge=0)]
PositiveInt = Annotated[int, Field(ge=1)]
Finite = Annotated[float, Field(allow_inf_nan=False)]
PositiveFinite = Annotated[float, Field(gt=0, allow_inf_nan=False)]
#: the largest camera frame side (px) an import may resize to
MAX_IMAGE_SIDE = 4096

Model = TypeVar("Model", bound=BaseModel)


class _Schema(BaseModel):
    """Strict types (no text read as a number); unknown keys allowed (formats grow), aliases for keys with '/'."""

    model_config = ConfigDict(strict=True, extra="allow", populate_by_name=True, frozen=True)


def plain(value: Any) -> Any:
    """`value` with numpy scalars and arrays (as h5py and pyarrow give them) turned into Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _describe(error: dict, as_option: bool) -> str:
    """One pydantic error as "`loc`: expected ..., got ..." (a file's key) or "loc=value: expected ..." (an option)."""
    loc = ".".join(str(part) for part in error["loc"])
    message = error["msg"]
    custom = message.startswith("Value error, ")
    message = message.removeprefix("Value error, ")
    if message.startswith("Input should be "):
        rest = message.removeprefix("Input should be ").split(" or instance of ")[0]
        message = "expected " + ("a value " if rest.startswith(("greater", "less")) else "") + rest
    if error["type"] == "missing":
        return f"`{loc}` is missing"
    got = error.get("input")
    if as_option:
        return f"{loc}={got!r:.80}: {message}"
    shown = "" if custom or (isinstance(got, (dict, list)) and len(repr(got)) > 60) else f", got {got!r:.60}"
    return f"`{loc}`: {message}{shown}" if loc else f"{message}{shown}"


def validated(model: type[Model], data: Any, where: str | None) -> Model:
    """`data` (a file's metadata) validated as `model`; `where=None` validates command-line options instead.

    Raises:
        FormatError: "<where>: `key`: expected ..., got ..." for the first problem (and how many more).
        UserError: (options) "option=value: expected ..." for the first bad option.
    """
    error = FormatError if where is not None else UserError
    prefix = f"{where}: " if where is not None else ""
    if not isinstance(data, Mapping):
        raise error(f"{prefix}expected a mapping of keys to values, got {type(data).__name__} {data!r:.60}")
    try:
        return model.model_validate(plain(data))
    except ValidationError as exc:
        errors = exc.errors()
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        raise error(f"{prefix}{_describe(errors[0], where is None)}{more}") from None


def validated_rows(model: type[Model], rows: Sequence[Any], where: str, unique: str | None = None) -> list[Model]:
    """Each row of a table validated as `model`; with `unique`, that field's values must differ between rows.

    Raises:
        FormatError: "<where>: row i: ..." for the first bad row, or a repeated value of `unique`.
    """
    out = [validated(model, row, f"{where}: row {i}") for i, row in enumerate(rows)]
    if unique is not None:
        seen: dict[Any, int] = {}
        for i, row in enumerate(out):
            value = getattr(row, unique)
            if value in seen:
                raise FormatError(f"{where}: row {i}: `{unique}` {value} appears in rows {seen[value]} and {i}; "
                                  f"each {unique.replace('_', ' ')} must be listed once")
            seen[value] = i
    return out


def _template_fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}


# -- LeRobot -----------------------------------------------------------------------------------------------------
class LeRobotFeature(_Schema):
    """A feature of meta/info.json: its dtype ("float32", "video", "image", "string", ...) and per-frame shape."""

    dtype: str
    shape: list[PositiveInt]
    names: Any = None
    info: dict | None = None

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        if value in ("video", "image", "string"):
            return value
        try:
            kind = np.dtype(value).kind
        except TypeError:
            kind = None
        if kind is None or kind not in "biuf":
            raise ValueError(f"expected video, image, string or a numeric dtype (float32, int64, bool, ...), "
                             f"got {value!r}")
        return value


class LeRobotInfo(_Schema):
    """meta/info.json (v3.0 and v2.x): what the importer reads of it."""

    codebase_version: str
    fps: PositiveFinite
    features: dict[str, LeRobotFeature]
    total_episodes: NonNegativeInt | None = None
    chunks_size: PositiveInt | None = None
    data_path: str | None = None
    video_path: str | None = None

    @model_validator(mode="after")
    def _paths(self) -> LeRobotInfo:
        v2 = self.codebase_version.startswith("v2.")
        fields = {"data_path": {"episode_chunk", "episode_index"} if v2 else {"chunk_index", "file_index"},
                  "video_path": ({"episode_chunk", "episode_index", "video_key"} if v2
                                 else {"chunk_index", "file_index", "video_key"})}
        videos = any(f.dtype == "video" for f in self.features.values())
        for key, allowed in fields.items():
            template = getattr(self, key)
            if template is None:
                if v2 and (key == "data_path" or videos):
                    raise ValueError(f"LeRobot {self.codebase_version} needs `{key}` (the file name template)")
                continue
            unknown = _template_fields(template) - allowed
            if unknown:
                raise ValueError(f"`{key}` {template!r} names {sorted(unknown)}; its template takes {sorted(allowed)}")
        return self


class LeRobotVideoRef(_Schema):
    """Where an episode's frames of one camera are (v3 episode table columns videos/<key>/...)."""

    chunk_index: NonNegativeInt
    file_index: NonNegativeInt
    from_timestamp: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    to_timestamp: Finite

    @model_validator(mode="after")
    def _window(self) -> LeRobotVideoRef:
        if self.to_timestamp < self.from_timestamp:
            raise ValueError(f"to_timestamp {self.to_timestamp} is before from_timestamp {self.from_timestamp}")
        return self


class LeRobotEpisodeV3(_Schema):
    """A row of meta/episodes/chunk-*/file-*.parquet."""

    episode_index: NonNegativeInt
    length: PositiveInt
    tasks: list[str] | None = None
    data_chunk_index: NonNegativeInt = Field(alias="data/chunk_index")
    data_file_index: NonNegativeInt = Field(alias="data/file_index")

    def video(self, feature: str, where: str) -> LeRobotVideoRef:
        """The row's columns videos/<feature>/* as a `LeRobotVideoRef`.

        Raises:
            FormatError: a column is missing or malformed (naming it).
        """
        prefix = f"videos/{feature}/"
        values = {k.removeprefix(prefix): v for k, v in (self.model_extra or {}).items() if k.startswith(prefix)}
        return validated(LeRobotVideoRef, values, f"{where}: camera {feature}: columns {prefix}*")


class LeRobotEpisodeV2(_Schema):
    """A line of meta/episodes.jsonl (v2.x)."""

    episode_index: NonNegativeInt
    length: PositiveInt
    tasks: list[str] | None = None


class LeRobotTask(_Schema):
    """A line of meta/tasks.jsonl (v2.x), or a row of meta/tasks.parquet (v3) with its text column as `task`."""

    task_index: NonNegativeInt
    task: str


# -- robomimic ---------------------------------------------------------------------------------------------------
class RobomimicEnvArgs(_Schema):
    """The `env_args` attribute of data/ (JSON): the environment the demos were recorded in."""

    env_name: str | None = None
    type: int | None = None
    env_kwargs: dict | None = None


class RobomimicDemo(_Schema):
    """The attributes of data/demo_N."""

    num_samples: PositiveInt | None = None


# -- a bag robolearn exported ------------------------------------------------------------------------------------
class BagExportMeta(_Schema):
    """The custom data `robolearn` of a bag's metadata.yaml (JSON), as `export_rosbag` writes it."""

    rate_hz: PositiveFinite
    joint_names: list[str] | None = None
    topics: dict[str, str]
    keys: list[str] = Field(default_factory=list)
    dtypes: dict[str, str] = Field(default_factory=dict)
    shapes: dict[str, list[NonNegativeInt]] = Field(default_factory=dict)

    @field_validator("dtypes")
    @classmethod
    def _dtypes(cls, value: dict[str, str]) -> dict[str, str]:
        for key, dtype in value.items():
            try:
                kind = np.dtype(dtype).kind
            except TypeError:
                raise ValueError(f"dtype {dtype!r} of {key} is not a numpy dtype") from None
            if kind not in "biuf":
                raise ValueError(f"dtype {dtype!r} of {key} is not numeric")
        return value


# -- options -----------------------------------------------------------------------------------------------------
KeyMap = dict[str, str | None]


def _check_key_map(value: KeyMap | None) -> KeyMap | None:
    """Every target of an import's key map must be a valid dataset key (`key_name_problem`)."""
    for source, key in (value or {}).items():
        problem = key_name_problem(key) if key is not None else None
        if problem:
            raise ValueError(f"{source} -> {key!r}: {problem}")
    return value


class RosbagImportOptions(_Schema):
    rate_hz: PositiveFinite
    joint_names: list[str] | None = None
    trigger_topic: str
    gap_s: PositiveFinite
    max_age_s: PositiveFinite
    stamp: Literal["log", "header"]

    @field_validator("joint_names")
    @classmethod
    def _names(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and (not value or len(set(value)) != len(value)):
            raise ValueError("expected distinct joint names, at least one (or null: the first message's order)")
        return value


class LeRobotImportOptions(_Schema):
    tolerance_s: PositiveFinite


class ImportOptions(_Schema):
    """What `robolearn dataset import` takes besides format, source and output (configs/dataset_import.yaml)."""

    overwrite: bool
    keys: KeyMap | None = None
    image_size: list[int] | None = None
    lerobot: LeRobotImportOptions
    rosbag: RosbagImportOptions

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: KeyMap | None) -> KeyMap | None:
        return _check_key_map(value)

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> Any:
        ok = isinstance(value, list) and len(value) == 2 and all(
            isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_IMAGE_SIDE for v in value)
        if value is not None and not ok:
            raise ValueError(f"expected [height, width] in pixels, each 1-{MAX_IMAGE_SIDE}, or null")
        return value


class VideoOptions(_Schema):
    """`lerobot.video` of `robolearn dataset export` (the `VideoSettings` of camera streams)."""

    codec: str
    pix_fmt: str
    crf: Annotated[int, Field(ge=0, le=63)]
    gop: PositiveInt
    preset: int | str | None = None


class LeRobotExportOptions(_Schema):
    task: str | None = None
    robot_type: str | None = None
    video: VideoOptions


class RosbagExportOptions(_Schema):
    episodes: list[NonNegativeInt] | None = None
    storage: Literal["mcap", "sqlite3"]
    joint_names: list[str] | None = None

    @field_validator("episodes")
    @classmethod
    def _episodes(cls, value: list[int] | None) -> list[int] | None:
        if value is not None and not value:
            raise ValueError("expected at least one episode index (or null: every episode)")
        if value is not None and len(set(value)) != len(value):
            raise ValueError("expected each episode once")
        return value


class ExportOptions(_Schema):
    """What `robolearn dataset export` takes besides format, source and output (configs/dataset_export.yaml)."""

    overwrite: bool
    fps: PositiveFinite | None = None
    keys: KeyMap | None = None
    lerobot: LeRobotExportOptions
    rosbag: RosbagExportOptions

    @field_validator("keys")
    @classmethod
    def _keys(cls, value: dict[str, str | None] | None) -> dict[str, str | None] | None:
        for key, name in (value or {}).items():
            if name is not None and not name.strip():
                raise ValueError(f"{key} -> {name!r}: expected a non-empty feature name (or null to leave it out)")
        return value


def options(model: type[Model], values: Mapping) -> Model:
    """Command-line options validated as `model`.

    Raises:
        UserError: "option=value: expected ..." for the first bad option, e.g. "rosbag.episodes=[]: expected at
            least one episode index (or null: every episode)".
    """
    return validated(model, values, None)
