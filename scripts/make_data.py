"""Regenerate (or verify) the shipped synthetic task splits in data/tasks/.

    python scripts/make_data.py            # rewrite data/tasks/{train,val,test,heldout} + manifest
    python scripts/make_data.py --check    # verify files on disk; exit 1 naming mismatches

The output is deterministic: fixed seeds and sizes below, tasks from `cotlib.synth`.
manifest.json records the generator version, seeds, sizes and the sha256 of every file.
`--check` verifies those hashes, that no file is missing or extra, and that the
generator still produces the same records and the same pixels (PNG bytes can differ
between zlib builds, pixels cannot).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from cotlib import synth  # noqa: E402

SPLITS = {
    "train": {"n": 240, "seed": 1},
    "val": {"n": 60, "seed": 2},
    "test": {"n": 120, "seed": 3},
    # the experiment's measurement: 30 tasks per type, disjoint from every other seed the course
    # uses (train 1, val 2, test 3, the base's held-out 4 and majority 5, extra training tasks 7,
    # pretraining >= 10_000_000)
    "heldout": {"n": 330, "seed": 8},
}
MC_FRACTION = 0.3
DEFAULT_OUT = ROOT / "data" / "tasks"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def split_tasks(name: str) -> list[synth.Task]:
    spec = SPLITS[name]
    return synth.make_tasks(spec["n"], seed=spec["seed"], mc_fraction=MC_FRACTION)


def settings() -> dict:
    return {
        "generator": "cotlib.synth",
        "generator_version": synth.GENERATOR_VERSION,
        "splits": SPLITS,
        "mc_fraction": MC_FRACTION,
        "config": asdict(synth.DEFAULT_CONFIG),
        "task_types": synth.TASK_TYPES,
    }


def data_files(out: Path) -> list[str]:
    """Every file under the split folders, as sorted paths relative to out."""
    files = [p for name in SPLITS for p in (out / name).rglob("*") if p.is_file()]
    return sorted(p.relative_to(out).as_posix() for p in files)


def build(out: Path) -> dict:
    """Write all splits and the manifest; returns the manifest."""
    for name in SPLITS:
        shutil.rmtree(out / name, ignore_errors=True)
        synth.save_split(split_tasks(name), out / name)
    manifest = {**settings(), "files": {f: sha256(out / f) for f in data_files(out)}}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def check(out: Path) -> list[str]:
    """Problems found on disk (empty list = all good)."""
    path = out / "manifest.json"
    if not path.exists():
        return [f"missing {path}"]
    manifest = json.loads(path.read_text())
    problems = [
        f"manifest {key} differs from this script/generator"
        for key, value in settings().items()
        if json.dumps(manifest.get(key), sort_keys=True) != json.dumps(value, sort_keys=True)
    ]
    listed, on_disk = manifest.get("files", {}), set(data_files(out))
    for rel, digest in sorted(listed.items()):
        if rel not in on_disk:
            problems.append(f"missing file: {rel}")
        elif sha256(out / rel) != digest:
            problems.append(f"sha256 mismatch: {rel}")
    problems += [f"unexpected file: {rel}" for rel in sorted(on_disk - set(listed))]
    if problems:
        return problems
    # the generator must still reproduce the shipped records and pixels
    for name in SPLITS:
        tasks = split_tasks(name)
        lines = (out / name / "tasks.jsonl").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
        expected = [t.to_record(f"images/{t.id}.png") for t in tasks]
        if records != expected:
            problems.append(f"{name}/tasks.jsonl no longer matches the generator")
            continue
        for t in tasks:
            with Image.open(out / name / "images" / f"{t.id}.png") as im:
                if not np.array_equal(
                    np.asarray(im.convert("RGB")), np.asarray(synth.render(t.scene))
                ):
                    problems.append(f"pixels differ from render: {name}/images/{t.id}.png")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify instead of writing")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="data folder")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for p in problems:
            print(f"MISMATCH {p}", file=sys.stderr)
        if problems:
            print(f"check failed: {len(problems)} problem(s) in {args.out}", file=sys.stderr)
            return 1
        print(f"ok: {args.out} matches its manifest and the generator")
        return 0
    manifest = build(args.out)
    size = sum((args.out / f).stat().st_size for f in manifest["files"])
    print(f"wrote {len(manifest['files'])} files ({size / 1024:.0f} KiB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
