"""The project's YAML configuration files read strictly, to name what is wrong in them.

Kedro names the file of a YAML syntax error but not the problem, and neither the file nor
the key of a duplicate key. When loading the parameters fails, the Kedro start-up hook and
``sa2-pipeline detect/retrain`` re-read the files here and say which file, line and key.
A module of its own, so that importing :mod:`sa2_pipeline.user_errors` stays free of YAML.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from sa2_pipeline.user_errors import UserError

__all__ = ["ConfigFileError", "config_file_error", "yaml_file_problem"]


class ConfigFileError(UserError, ValueError):
    """A configuration file that is not valid YAML, or gives a key twice."""


class _StrictLoader(yaml.SafeLoader):
    """YAML's safe loader that refuses a key given twice in one mapping."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        lines: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            try:
                first = lines.get(key)
            except TypeError:  # an unhashable key: yaml reports it below
                continue
            if first is not None:
                raise ConfigFileError(f"key {key!r} is given twice (lines {first} and "
                                      f"{line})")
            lines[key] = line
        return super().construct_mapping(node, deep=deep)


def yaml_file_problem(path: Path) -> str | None:
    """What is wrong with the YAML file ``path`` (file and line named), or ``None``."""
    try:
        yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506
    except ConfigFileError as err:
        return f"{path}: {err}"
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(p) for p in (err.context, err.problem) if p)
        return f"{path}:{where}: {problem or err}"
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        return f"{path}: {err}"
    return None


def config_file_error(conf_source: str | Path, envs: Iterable[str | None]
                      ) -> ConfigFileError | None:
    """The YAML files of ``conf_source``'s ``base`` and ``envs`` folders that do not
    load (syntax error, duplicate key), as one error naming each file and line; ``None``
    when every file loads (the caller's error then lies elsewhere)."""
    conf = Path(conf_source)
    problems: list[str] = []
    for env in dict.fromkeys(["base", *(e for e in envs if e)]):
        folder = conf / env
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*")
                           if p.suffix in (".yml", ".yaml") and p.is_file()):
            problem = yaml_file_problem(path)
            if problem:
                problems.append(problem)
    if not problems:
        return None
    return ConfigFileError("a configuration file does not load: " + "; ".join(problems))
