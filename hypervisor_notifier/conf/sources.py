"""The configuration files as oslo.config read them: where each option was set, and typos.

oslo.config ignores what nobody registered, so ``transprot_url`` or
``[publsher]`` would silently leave a default in force. The service's own
files may hold only what is registered on its ConfigOpts: its groups, and
whatever a library registers there (oslo.log's options, once registered,
are known without a list to keep).
"""

from __future__ import annotations

import dataclasses
import difflib
import glob
import os
from collections.abc import Iterator, Sequence

from oslo_config import cfg

DEFAULT = "DEFAULT"


def section_key(section: str | None) -> str:
    """A section's name as oslo.config looks it up (``[Publisher]`` is ``[publisher]``)."""
    if section is None or section == DEFAULT:
        return DEFAULT
    return section.lower()


@dataclasses.dataclass(frozen=True)
class ConfigFile:
    """One parsed config file.

    Arguments:
        path: Its path.
        sections: ``{section: [option, ...]}``, as written in the file.

    """

    path: str
    sections: dict[str, list[str]]


def config_files(conf: cfg.ConfigOpts, argv: Sequence[str] = ()) -> list[str]:
    """The files ``conf`` read, in the order it read them (a later one wins).

    Arguments:
        conf: A parsed ConfigOpts.
        argv: Its command line: oslo.config keeps only the last ``--config-dir``.

    """
    dirs = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == "--config-dir"]
    dirs += [arg.split("=", 1)[1] for arg in argv if arg.startswith("--config-dir=")]
    if not dirs and conf.config_dir:
        given = conf.config_dir
        dirs = [given] if isinstance(given, str) else list(given)
    files = list(conf.config_file or [])
    for directory in dirs:
        files += sorted(glob.glob(os.path.join(directory, "*.conf")))
    return files


def read(paths: Sequence[str]) -> Iterator[ConfigFile]:
    """Each of ``paths`` that oslo.config's own parser can read."""
    for path in paths:
        sections: dict[str, dict[str, list[str]]] = {}
        try:
            cfg.ConfigParser(path, sections).parse()
        except (OSError, ValueError, cfg.ParseError):
            continue  # oslo.config itself reports it
        yield ConfigFile(path, {name: list(options) for name, options in sections.items()})


def where(conf: cfg.ConfigOpts, group: str | None, option: str | None = None) -> str:
    """``FILE: [group] option``: where an error's option was set (the file that wins).

    Without a file (a default, the command line): ``[group] option``.

    Arguments:
        conf: A parsed ConfigOpts (the service's, or nova's).
        group: The option's group (None: ``[DEFAULT]``).
        option: The option; None names the section only.

    """
    key = section_key(group)
    label = f"[{group or DEFAULT}]" + (f" {option}" if option else "")
    for parsed in reversed(list(read(config_files(conf)))):
        for section, options in parsed.sections.items():
            if section_key(section) == key and (option is None or option in options):
                return f"{parsed.path}: {label}"
    return label


def _known(conf: cfg.ConfigOpts) -> dict[str, set[str]]:
    """``{section: {option, ...}}`` of every registered option, deprecated names included."""
    known: dict[str, set[str]] = {DEFAULT: set()}
    # oslo.config has no public list of registered Opt objects (its generator
    # and validator read entry points instead); this is its own iterator.
    for info, group in conf._all_opt_infos():
        opt, name = info["opt"], group.name if group is not None else None
        known.setdefault(section_key(name), set()).add(opt.dest)
        for old in opt.deprecated_opts:
            section = section_key(old.group or name)
            known.setdefault(section, set()).add(old.name or opt.dest)
    return known


def unknown(conf: cfg.ConfigOpts, files: Sequence[str]) -> list[str]:
    """One line per unknown section and per unknown option of a known section in ``files``."""
    known = _known(conf)
    problems = []
    for parsed in read(files):
        for section, options in parsed.sections.items():
            key = section_key(section)
            if key not in known:
                problems.append(f"{parsed.path}: [{section}]: unknown section{_guess(key, known)}")
                continue
            for option in options:
                if len(option.split()) > 1:
                    # "key s3cret:x" reads as option "key s3cret", value "x": show one word.
                    problems.append(
                        f"{parsed.path}: [{section}] {option.split()[0]} ...: not an option "
                        "name (a missing '='?)"
                    )
                elif option not in known[key]:
                    problems.append(
                        f"{parsed.path}: [{section}] {option}: unknown option"
                        f"{_guess(option, known[key])}"
                    )
    return problems


def _guess(name: str, candidates: object) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1)  # type: ignore[call-overload]
    return f" (did you mean {close[0]}?)" if close else ""
