"""Fill the artifact folders: a source's items imported into a raw folder (in parallel, in input order, bad pairs
collected), its SOURCE.md, and the processed folder (the raw files hard-linked, plus data_split.csv).

Every written file's size and SHA-256 come from the bytes in hand (`import_all`, `build_processed`), so the
manifests reuse them instead of reading the files back."""
import os
import shutil
import sys
from multiprocessing import Pool

from bddseg import config, layout, sources
from bddseg.atomic import atomic_write
from bddseg.cli import UserError

MAX_PROBLEMS = 20  # without --skip-bad, stop after this many bad pairs and report them


def import_all(items, root, workers, skip_bad, thumbs=0, meanwhile=None):
    """Load, check and write every item into root/images and root/labels (thumbnails for the first `thumbs`);
    `meanwhile()` runs in this process once the work is handed out. Returns (imported, problems, {relative path:
    {size, sha256}} of the written files)."""
    (root / layout.IMAGES).mkdir()
    (root / layout.LABELS).mkdir()
    config.reuse_image_memory()  # here, and in each worker (ordered_map)
    done, problems, hashes = [], [], {}
    tasks = [(item, i < thumbs, root) for i, item in enumerate(items)]
    for r, files in ordered_map(run_task, tasks, workers, meanwhile):
        if r.error:
            problems.append(r.error)
            if not skip_bad and len(problems) >= MAX_PROBLEMS:
                break
            continue
        hashes.update(files)
        done.append(r)
    return done, problems, hashes


def ordered_map(fn, tasks, workers, meanwhile=None):
    """map() in input order, spread over `workers` processes when more than one; `meanwhile()` is called once, after
    the worker processes are started and the tasks handed out (before the first result); with one worker, first."""
    meanwhile = meanwhile or (lambda: None)
    if workers <= 1:
        meanwhile()
        yield from map(fn, tasks)
        return
    with Pool(workers, initializer=config.reuse_image_memory) as pool:  # started before `meanwhile` runs
        results = pool.imap(fn, tasks, chunksize=8)
        meanwhile()
        yield from results


def run_task(task):
    """Worker: import one item and write its two files (the bytes stay in the worker); returns (imported, {relative
    path: {size, sha256}})."""
    item, thumb, root = task
    r = sources.import_item(item, thumb)
    if r.error:
        return r, {}
    image, label = f"{layout.IMAGES}/{r.name}{r.ext}", f"{layout.LABELS}/{layout.label_name(r.name + r.ext)}"
    (root / image).write_bytes(r.image)
    (root / label).write_bytes(r.mask_png)
    files = {image: {"size": len(r.image), "sha256": r.image_sha},
             label: {"size": len(r.mask_png), "sha256": r.mask_sha}}
    r.image = r.mask_png = b""  # written: not sent back, not held
    return r, files


def check_problems(problems, n_items, skip_bad, label):
    """Bad pairs stop the step (exit 2) unless --skip-bad, which lists them; nothing usable left is an error too."""
    if problems and not skip_bad:
        more = " (stopped there)" if len(problems) >= MAX_PROBLEMS else ""
        raise UserError(f"{len(problems)} bad image/mask pair(s) in {label}{more}; fix them or pass "
                              f"--skip-bad to leave them out:\n  " + "\n  ".join(problems))
    if problems:
        print(f"--skip-bad: left out {len(problems)} of {n_items} pairs:\n  " + "\n  ".join(problems), file=sys.stderr)
    if len(problems) == n_items:
        raise UserError(f"no usable image/mask pairs in {label}: all {n_items} were bad")


def write_source_note(root, name, info, problems, command):
    """SOURCE.md: where the data came from, its licence, the command that made it, pairs left out."""
    lines = [f"# {name}", "", f"Source: **{info['source']}**", ""]
    lines += [f"- {k}: {v}" for k, v in info.items() if k != "source" and v is not None]
    lines += ["", f"Licence: {sources.LICENCES[info['source']]}", "",
              f"Classes: {', '.join(f'{c} {n}' for c, n in config.BDD_CLASSES.items())}; "
              f"{config.IGNORE} = ignore.", "", "Made with:", "", f"    {command}", ""]
    if problems:
        lines += [f"Left out with --skip-bad ({len(problems)}):", ""] + [f"- {p}" for p in problems] + [""]
    atomic_write(root / layout.SOURCE_MD, "\n".join(lines))


def link_or_copy(src, dst) -> bool:
    """Hard-link a file (same bytes, no extra space), copying when links are not possible; True when linked."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        shutil.copyfile(src, dst)
        return False


def build_processed(raw, proc, split_df, raw_files: dict) -> dict:
    """Processed folder: the raw files (hard-linked) plus data_split.csv; returns the raw manifest entries
    ({relative path: {size, sha256}}) of the files that are hard links, whose bytes need no second hash."""
    linked = []
    for sub in (layout.IMAGES, layout.LABELS):
        (proc / sub).mkdir()
        for f in sorted((raw / sub).iterdir()):
            if link_or_copy(f, proc / sub / f.name):
                linked.append(f"{sub}/{f.name}")
    for name in (layout.EDA_CSV, layout.SOURCE_MD):
        if link_or_copy(raw / name, proc / name):
            linked.append(name)
    split_df.to_csv(proc / layout.SPLIT_CSV, index=False)
    return {rel: raw_files[rel] for rel in linked if rel in raw_files}
