"""``vitcompress``: small helpers around the workflow. The pipeline itself runs with Snakemake
(``snakemake --cores 4 --resources gpu=1``) or DVC (``dvc repro``)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EPILOG = """examples:
  vitcompress validate                    check params.yaml (all profiles), build every row's models
                                          (shapes only) and print the jobs' cells
  vitcompress validate --profile paper    the same for one profile
  vitcompress methods                     list the compression methods a step can use
  vitcompress sources                     list the data sources a data set can use
  vitcompress sections --keys             a profile's train, measure, scaling and models keys (Markdown)
  vitcompress fingerprint                 what the speed measurements on this machine depend on
  vitcompress env                         does this interpreter have what requirements.lock pins?
  vitcompress smoke-files                 hand-made CIFAR and weights files for the paper_smoke profile

run the pipeline:
  make demo                                            offline demo profile, CPU is enough
  snakemake --cores 4 --resources gpu=1 --config profile=paper
  snakemake --cores 4 bench_arch --config profile=paper   size and time each row's architecture only
"""


def _validate(args) -> int:
    from vitcompress.config import ConfigError, load_params
    from vitcompress.preflight import preflight

    try:
        prof = load_params(args.params, {"profile": args.profile} if args.profile else None)
        preflight(prof)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.params}: valid. Profile {prof.name!r}: "
          f"{len(prof.datasets)} data set(s) x {len(prof.rows)} row(s) = {len(prof.datasets) * len(prof.rows)} cells")
    for row in prof.rows:
        print(f"  {row['id']:<24} {row['model']} [{' -> '.join(row['chain'])}]")
    return 0


def _sources(args) -> int:
    from vitcompress.data import SOURCES

    if args.keys:
        from vitcompress.settings import markdown_keys

        print(markdown_keys(SOURCES, "source"), end="")
        return 0
    for name, cls in sorted(SOURCES.items()):
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<16} {doc}")
    return 0


def _sections(args) -> int:
    from vitcompress.sections import PROFILE_KEYS
    from vitcompress.settings import markdown_keys

    if args.keys:
        print(markdown_keys(PROFILE_KEYS, "section"), end="")
        return 0
    for name, cls in PROFILE_KEYS.items():
        print(f"{name:<16} {(cls.__doc__ or '').strip().splitlines()[0]}")
    return 0


def _methods(args) -> int:
    from vitcompress.methods import METHODS

    if args.keys:
        from vitcompress.settings import markdown_keys

        print(markdown_keys(METHODS), end="")
        return 0
    for name, cls in sorted(METHODS.items()):
        doc = (sys.modules[cls.__module__].__doc__ or "").strip().splitlines()[0]
        print(f"{name:<16} {doc}")
    return 0


def _fingerprint(args) -> int:
    from vitcompress.measure import fingerprint

    print(json.dumps(fingerprint(args.threads), indent=2))
    return 0


def _smoke_files(args) -> int:
    from vitcompress.config import ConfigError, load_params
    from vitcompress.smoke import write_profile_files

    try:
        prof = load_params(args.params, {"profile": args.profile})
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    for path in write_profile_files(prof):
        print(f"wrote {path}")
    return 0


def _env(args) -> int:
    from vitcompress.environment import CONDA_ENV, conda_env, mismatches

    if args.write_conda:
        Path(CONDA_ENV).write_text(conda_env(args.lock))
        print(f"wrote {CONDA_ENV} from {args.lock}")
        return 0
    bad = mismatches(args.lock)
    for line in bad:
        print(line, file=sys.stderr)
    print(f"{args.lock}: {'every pin installed' if not bad else f'{len(bad)} pin(s) differ: run make install'}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vitcompress", description=__doc__, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("validate", help="check params.yaml against its schema and list the rows")
    p.add_argument("--params", default="params.yaml", help="path to params.yaml (default: %(default)s)")
    p.add_argument("--profile", help="profile to show (default: the file's `profile`)")
    p.set_defaults(func=_validate)
    p = sub.add_parser("methods", help="list the methods a step can use")
    p.add_argument("--keys", action="store_true", help="every method's step keys as a Markdown table")
    p.set_defaults(func=_methods)
    p = sub.add_parser("sources", help="list the data sources a data set can use")
    p.add_argument("--keys", action="store_true", help="every source's keys as a Markdown table")
    p.set_defaults(func=_sources)
    p = sub.add_parser("sections", help="list a profile's own sections (train, measure, scaling, models)")
    p.add_argument("--keys", action="store_true", help="every section's keys as a Markdown table")
    p.set_defaults(func=_sections)
    p = sub.add_parser("smoke-files", help="write the hand-made CIFAR files and timm weights files a smoke "
                                           "profile reads (random data: for running the code paths, not results)")
    p.add_argument("--params", default="params.yaml", help="path to params.yaml (default: %(default)s)")
    p.add_argument("--profile", default="paper_smoke", help="the profile whose files to write (default: %(default)s)")
    p.set_defaults(func=_smoke_files)
    p = sub.add_parser("env", help="check this interpreter against requirements.lock (or write the conda env from it)")
    p.add_argument("--lock", default="requirements.lock", help="the lock file (default: %(default)s)")
    p.add_argument("--write-conda", action="store_true", help="regenerate envs/vitcompress.yaml from the lock")
    p.set_defaults(func=_env)
    p = sub.add_parser("fingerprint", help="print this machine's hardware fingerprint")
    p.add_argument("--threads", type=int, default=1, help="CPU threads the timings use (default: %(default)s)")
    p.set_defaults(func=_fingerprint)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
