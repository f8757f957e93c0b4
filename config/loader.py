"""Load Sluice's YAML configuration into a `SluiceConfig`, with errors that point at lines.

    YAML file (or the embedded default) --compose--> node tree with marks
      --build--> plain data + {path: (line, column)} --substitute ${env:..}/${file:..}-->
      --pydantic--> SluiceConfig        (or ConfigError listing every problem)

Substitution runs on parsed string scalars, never on the raw text, so a secret that
contains `$`, `:`, quotes or YAML syntax is inserted byte for byte and never re-read
as YAML. Error messages never echo input values, and any text that came from a
substitution or sits under a secret field (e.g. `api_key`) is masked in them.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, SecretStr, ValidationError

from config.extras import missing_extras, module_installed
from config.models import SluiceConfig

__all__ = [
    "ConfigError",
    "Problem",
    "check_config",
    "format_path",
    "load_config",
    "parse_config",
]

PathKey = tuple[str | int, ...]
Mark = tuple[int, int]

DEFAULT_SOURCE = "<default.yaml>"
_MASK = "***"
# Shorter strings are not masked: replacing "a" inside a message would garble it, and
# a secret that short protects nothing anyway.
_MIN_MASK_LEN = 4
_STR_TAG = "tag:yaml.org,2002:str"
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_SUBSTITUTION = re.compile(r"\$\$\{|\$\{(?P<body>[^}]*)(?P<close>\})?")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class Problem:
    """One configuration problem: where it is (file, 1-based line and column, dotted
    field path) and what is wrong. `str()` gives `file:line:col: path: message`."""

    source: str
    line: int | None
    column: int | None
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        if self.path:
            return f"{where}: {self.path}: {self.message}"
        return f"{where}: {self.message}"


class ConfigError(Exception):
    """The configuration cannot be used; `problems` lists every problem found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: list[Problem] = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))

    def __str__(self) -> str:
        return "\n".join(str(p) for p in self.problems)


def load_config(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    installed: Callable[[str], bool] = module_installed,
) -> SluiceConfig:
    """Read a config file (or, with `path=None`, the embedded `config/default.yaml`)
    and return the validated `SluiceConfig`.

    `${env:VAR}` is looked up in `environ` (default: `os.environ`); `${file:path}` is
    read relative to the config file's directory. Raises `ConfigError` listing every
    problem with its file line and dotted field path, including a model whose engine
    needs an extra that is not installed (`installed` says which modules are).
    """
    if path is None:
        text = resources.files("config").joinpath("default.yaml").read_text(encoding="utf-8")
        return parse_config(text, source=DEFAULT_SOURCE, environ=environ, installed=installed)
    file_path = Path(path)
    source = str(path)
    try:
        text = file_path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(
            [Problem(source, None, None, "", f"cannot read file: {reason}")]
        ) from None
    return parse_config(
        text, source=source, base_dir=file_path.parent, environ=environ, installed=installed
    )


def parse_config(
    text: str,
    *,
    source: str = "<string>",
    base_dir: Path | None = None,
    environ: Mapping[str, str] | None = None,
    installed: Callable[[str], bool] = module_installed,
) -> SluiceConfig:
    """Turn YAML text into a validated `SluiceConfig`.

    `source` names the text in error messages; `${file:...}` paths are relative to
    `base_dir` (default: the working directory). Raises `ConfigError`.
    """
    env = os.environ if environ is None else environ
    doc = _compose(text, source, base_dir or Path.cwd(), env)
    secrets = doc.secrets | _secret_values(doc.data, _secret_field_names(SluiceConfig))
    try:
        config = SluiceConfig.model_validate(doc.data)
    except ValidationError as exc:
        problems = [_problem_from_error(err, doc, source) for err in exc.errors()]
        raise ConfigError(_sorted(_masked(p, secrets) for p in problems)) from None
    missing = missing_extras(config, installed)
    if missing:
        raise ConfigError([_extra_problem(path, message, doc, source) for path, message in missing])
    return config


def _extra_problem(path: PathKey, message: str, doc: _Document, source: str) -> Problem:
    mark = doc.key_marks.get(path) or _nearest(path, doc.value_marks)
    line, column = mark if mark is not None else (None, None)
    return Problem(source, line, column, format_path(path), message)


def check_config(
    path: str | Path | None,
    *,
    environ: Mapping[str, str] | None = None,
    installed: Callable[[str], bool] = module_installed,
) -> list[str]:
    """Validate a config file for `sluice check-config FILE`: path in, the problems as
    `file:line:col: path: message` strings out (an empty list when the file is valid)."""
    try:
        load_config(path, environ=environ, installed=installed)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    return []


# --- YAML -> plain data with marks -------------------------------------------------


@dataclass
class _Document:
    data: Any
    value_marks: dict[PathKey, Mark] = field(default_factory=dict)
    key_marks: dict[PathKey, Mark] = field(default_factory=dict)
    secrets: set[str] = field(default_factory=set)


def _compose(text: str, source: str, base_dir: Path, env: Mapping[str, str]) -> _Document:
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_syntax_problem(exc, source)]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([Problem(source, None, None, "", f"YAML error: {exc}")]) from None
        builder = _Builder(loader, source, base_dir, env)
        if root is None:
            data: Any = {}
        else:
            builder.doc.value_marks[()] = _mark(root)
            data = builder.build(root, ())
            if not isinstance(data, dict) and not builder.problems:
                builder.add(root, (), "the top level of the config must be a mapping")
        if builder.problems:
            secrets = builder.doc.secrets | _secret_values(data, _secret_field_names(SluiceConfig))
            raise ConfigError(_sorted(_masked(p, secrets) for p in builder.problems))
        builder.doc.data = data
        return builder.doc
    finally:
        loader.dispose()


def _syntax_problem(exc: yaml.MarkedYAMLError, source: str) -> Problem:
    mark = exc.problem_mark or exc.context_mark
    message = f"YAML syntax error: {exc.problem or exc.context or 'invalid YAML'}"
    if exc.context and exc.problem and exc.context_mark is not None:
        message += f" ({exc.context} at line {exc.context_mark.line + 1})"
    if mark is None:
        return Problem(source, None, None, "", message)
    return Problem(source, mark.line + 1, mark.column + 1, "", message)


class _Builder:
    """Walks a composed node tree once: plain data out, marks and problems recorded."""

    def __init__(
        self, loader: yaml.SafeLoader, source: str, base_dir: Path, env: Mapping[str, str]
    ) -> None:
        self.loader = loader
        self.source = source
        self.base_dir = base_dir
        self.env = env
        self.doc = _Document(data=None)
        self.problems: list[Problem] = []
        self.active: set[int] = set()

    def add(self, node: yaml.Node, path: PathKey, message: str) -> None:
        mark = node.start_mark
        self.problems.append(
            Problem(self.source, mark.line + 1, mark.column + 1, format_path(path), message)
        )

    def build(self, node: yaml.Node, path: PathKey) -> Any:
        if id(node) in self.active:
            self.add(node, path, "recursive YAML alias")
            return None
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            if isinstance(node, yaml.SequenceNode):
                return self._sequence(node, path)
            return self._scalar(node, path)
        finally:
            self.active.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: PathKey) -> dict[str, Any]:
        first_seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, yaml.ScalarNode):
                continue
            if key_node.value in first_seen:
                self.add(
                    key_node,
                    (*path, key_node.value),
                    f"duplicate key (first at line {first_seen[key_node.value]})",
                )
            else:
                first_seen[key_node.value] = key_node.start_mark.line + 1
        try:
            self.loader.flatten_mapping(node)
        except yaml.MarkedYAMLError as exc:
            self.add(node, path, f"bad merge key: {exc.problem}")
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            if key is None:
                continue
            child = (*path, key)
            key_mark = _mark(key_node)
            self.doc.key_marks[child] = key_mark
            # A scalar error points at the value; a block's error at its key line.
            scalar = isinstance(value_node, yaml.ScalarNode)
            self.doc.value_marks[child] = _mark(value_node) if scalar else key_mark
            result[key] = self.build(value_node, child)
        return result

    def _key(self, key_node: yaml.Node, path: PathKey) -> str | None:
        if isinstance(key_node, yaml.ScalarNode):
            key = self._construct(key_node, path)
            if isinstance(key, str):
                return key
        self.add(key_node, path, "mapping keys must be strings (quote the key)")
        return None

    def _sequence(self, node: yaml.SequenceNode, path: PathKey) -> list[Any]:
        items: list[Any] = []
        for index, item_node in enumerate(node.value):
            child = (*path, index)
            self.doc.value_marks[child] = _mark(item_node)
            items.append(self.build(item_node, child))
        return items

    def _scalar(self, node: yaml.Node, path: PathKey) -> Any:
        if node.tag == _TIMESTAMP_TAG:
            # Keep dates as written: `api_version: 2024-06-01` is a string to us.
            return node.value
        value = self._construct(node, path)
        if node.tag == _STR_TAG and isinstance(value, str):
            return self._substitute(value, node, path)
        return value

    def _construct(self, node: yaml.Node, path: PathKey) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.add(node, path, f"cannot read value: {exc.problem}")
            return None

    def _substitute(self, text: str, node: yaml.Node, path: PathKey) -> str:
        if "$" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            body = match.group("body")
            if match.group("close") is None:
                self.add(node, path, "unterminated '${' (write '$${' for a literal '${')")
                return ""
            kind, _, arg = body.partition(":")
            kind, arg = kind.strip(), arg.strip()
            if kind == "env" and arg:
                return self._env(arg, node, path)
            if kind == "file" and arg:
                return self._file(arg, node, path)
            # The text inside ${...} is not echoed: it may be a pasted secret.
            self.add(
                node,
                path,
                "unknown substitution (use ${env:VAR} or ${file:path}; "
                "write '$${' for a literal '${')",
            )
            return ""

        return _SUBSTITUTION.sub(replace, text)

    def _env(self, name: str, node: yaml.Node, path: PathKey) -> str:
        value = self.env.get(name)
        if value is None:
            self.add(node, path, f"environment variable {name!r} is not set")
            return ""
        self.doc.secrets.add(value)
        return value

    def _file(self, name: str, node: yaml.Node, path: PathKey) -> str:
        file_path = Path(name)
        if not file_path.is_absolute():
            file_path = self.base_dir / file_path
        try:
            value = file_path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self.add(node, path, f"cannot read file {name!r} ({file_path}): {reason}")
            return ""
        value = value.removesuffix("\n").removesuffix("\r")
        self.doc.secrets.add(value)
        return value


def _mark(node: yaml.Node) -> Mark:
    return node.start_mark.line + 1, node.start_mark.column + 1


# --- pydantic errors -> problems ---------------------------------------------------


def format_path(path: PathKey) -> str:
    """A path tuple in, its dotted form out: `("routers", "language", 0, "id")` ->
    `routers.language[0].id` (keys that are not plain words are quoted: `["a.b"]`)."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.match(part):
            out += f".{part}" if out else part
        else:
            out += f"[{json.dumps(part)}]"
    return out


def _data_path(loc: tuple[int | str, ...], data: Any) -> PathKey:
    """Map a pydantic `loc` onto the data: drop pydantic's own tags such as '[key]'."""
    path: list[str | int] = []
    current: Any = data
    for part in loc:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current):
            current = current[part]
        elif isinstance(part, str) and ("[" in part or "(" in part):
            continue
        else:
            current = None
        path.append(part)
    return tuple(path)


def _nearest(path: PathKey, marks: Mapping[PathKey, Mark]) -> Mark | None:
    for end in range(len(path), -1, -1):
        mark = marks.get(path[:end])
        if mark is not None:
            return mark
    return None


def _problem_from_error(err: Mapping[str, Any], doc: _Document, source: str) -> Problem:
    path = _data_path(tuple(err["loc"]), doc.data)
    kind = str(err["type"])
    if kind == "extra_forbidden":
        mark = doc.key_marks.get(path) or _nearest(path, doc.value_marks)
        message = "unknown key" + _suggestion(path)
    else:
        mark = _nearest(path, doc.value_marks)
        message = _message(kind, str(err["msg"]))
    line, column = mark if mark is not None else (None, None)
    return Problem(source, line, column, format_path(path), message)


def _message(kind: str, msg: str) -> str:
    if kind == "missing":
        return "required field is missing"
    for prefix in ("Value error, ", "Assertion failed, "):
        if msg.startswith(prefix):
            return msg.removeprefix(prefix)
    return msg


def _suggestion(path: PathKey) -> str:
    if not path or not isinstance(path[-1], str):
        return ""
    model = _model_at(SluiceConfig, path[:-1])
    if model is None:
        return ""
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(path[-1], allowed, n=1)
    if close:
        return f" (did you mean {close[0]!r}?)"
    return f" (expected one of: {', '.join(allowed)})"


def _without_none(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _model_at(root: type[BaseModel], path: PathKey) -> type[BaseModel] | None:
    current: Any = root
    for part in path:
        if isinstance(part, int):
            if get_origin(current) is not list:
                return None
            current = _without_none(get_args(current)[0])
        else:
            if not (isinstance(current, type) and issubclass(current, BaseModel)):
                return None
            info = current.model_fields.get(part)
            if info is None:
                return None
            current = _without_none(info.annotation)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return current
    return None


# --- keeping secrets out of messages -----------------------------------------------


def _flat_args(annotation: Any) -> Iterator[Any]:
    yield annotation
    for arg in get_args(annotation):
        yield from _flat_args(arg)


def _secret_field_names(root: type[BaseModel]) -> frozenset[str]:
    """Names of every field typed `SecretStr` anywhere under `root` (e.g. `api_key`)."""
    names: set[str] = set()
    seen: set[type[BaseModel]] = set()
    pending = [root]
    while pending:
        model = pending.pop()
        if model in seen:
            continue
        seen.add(model)
        for name, info in model.model_fields.items():
            for arg in _flat_args(info.annotation):
                if arg is SecretStr:
                    names.add(name)
                elif isinstance(arg, type) and issubclass(arg, BaseModel):
                    pending.append(arg)
    return frozenset(names)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def _secret_values(data: Any, secret_names: frozenset[str]) -> set[str]:
    """Every string found under a secret-named key, however malformed its value."""
    found: set[str] = set()
    if isinstance(data, dict):
        for key, value in data.items():
            if key in secret_names:
                found.update(_strings(value))
            else:
                found |= _secret_values(value, secret_names)
    elif isinstance(data, list):
        for item in data:
            found |= _secret_values(item, secret_names)
    return found


def _masked(problem: Problem, secrets: set[str]) -> Problem:
    message = problem.message
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= _MIN_MASK_LEN and secret in message:
            message = message.replace(secret, _MASK)
    if message == problem.message:
        return problem
    return Problem(problem.source, problem.line, problem.column, problem.path, message)


def _sorted(problems: Iterator[Problem] | Sequence[Problem]) -> list[Problem]:
    return sorted(problems, key=lambda p: (p.line or 0, p.column or 0))
