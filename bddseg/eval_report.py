"""What an evaluation shows: the local report folder, the W&B table and the console summary.

The folder holds metrics.json, eval.json, confusion matrices, pixel shares, per-image overlays and index.html, all
written into one folder (eval.py hands in a temp folder that is renamed on success). index.html is plain,
self-contained HTML (no scripts, no CDN) that references only files written here, by relative path.
Its size is bounded: every image gets JPEG thumbnails at most THUMB_WIDTH wide; only the worst `report_images`
get full-size JPEG overlays, their raw predicted masks (PNG) and a W&B image.
"""
import html
import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # no pyplot: no global backend switch, notebooks keep inline figures
from PIL import Image
from sklearn.metrics import ConfusionMatrixDisplay

from bddseg import config
from bddseg.atomic import write_json

IMAGES = "images"      # thumbnails <stem>.jpg (input), <stem>_true.jpg, <stem>_pred.jpg (overlays); worst images also
FULL = "full"          # at full size: images/<stem>_full.jpg, <stem>_true_full.jpg, <stem>_pred_full.jpg
MASKS = "masks"        # worst images: raw predicted class ids at the mask's own resolution, <stem>.png
CM_PNG, CM_COUNTS_PNG, CM_CSV = "confusion_matrix.png", "confusion_matrix_counts.png", "confusion_matrix.csv"
SHARE_CSV, PREDS_CSV, METRICS_JSON, INFO_JSON = "pixel_share.csv", "predictions.csv", "metrics.json", "eval.json"
INDEX = "index.html"
THUMB_WIDTH = 256      # thumbnails are written at most this wide
JPEG_QUALITY = 75     # report JPEGs (thumbnails and full-size overlays)
REPORT_IMAGES = 50     # default --report_images: full-size overlays for this many worst images


def palette() -> np.ndarray:
    """256x3 uint8 lookup table: class id -> colour (config.CLASS_COLORS, 255 = ignore)."""
    lut = np.zeros((256, 3), np.uint8)
    for k, rgb in config.CLASS_COLORS.items():
        lut[k] = rgb
    return lut


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an RGB uint8 image (same HxW); ignore pixels are left as the image (PIL's C loops:
    5x faster than the same arithmetic in numpy floats, within 1 of it per channel)."""
    img, labels = Image.fromarray(image), Image.fromarray(np.asarray(mask, np.uint8))
    colors = labels.copy()
    colors.putpalette(palette().ravel().tolist())  # L -> P: class id -> colour
    keep = labels.point([0 if v == config.IGNORE else 255 for v in range(256)])
    return np.asarray(Image.composite(Image.blend(img, colors.convert("RGB"), alpha), img, keep))


def thumbnail_size(h: int, w: int, max_width: int = THUMB_WIDTH) -> tuple:
    """(h, w) scaled down to at most max_width wide, aspect kept."""
    if w <= max_width:
        return h, w
    return max(1, round(h * max_width / w)), max_width


def fit_masks(image: np.ndarray, true: np.ndarray, pred: np.ndarray) -> tuple:
    """(true, predicted) masks resized (nearest) to the image's size when they differ from it."""
    h, w = image.shape[:2]
    if true.shape == (h, w):
        return true, pred
    return tuple(np.asarray(Image.fromarray(np.asarray(m, np.uint8)).resize((w, h), Image.NEAREST))
                 for m in (true, pred))


def overlays(image: np.ndarray, true: np.ndarray, pred: np.ndarray) -> dict:
    """{image, true, pred} RGB arrays at the image's size: the input and the true and predicted overlays on it."""
    true, pred = fit_masks(image, true, pred)
    return {"image": image, "true": overlay(image, true), "pred": overlay(image, pred)}


def save_jpegs(folder, arrays: dict, suffix: str, stem: str) -> dict:
    """Write {key: RGB array} as images/<stem>[_key]<suffix>.jpg; return {key<suffix>: relative path}."""
    (Path(folder) / IMAGES).mkdir(exist_ok=True)
    paths = {}
    for key, arr in arrays.items():
        rel = f"{IMAGES}/{stem}{'' if key == 'image' else '_' + key}{suffix}.jpg"
        Image.fromarray(arr).save(Path(folder) / rel, quality=JPEG_QUALITY)
        paths[key + suffix] = rel
    return paths


def save_thumbnails(folder, stem: str, thumb: np.ndarray, true: np.ndarray, pred: np.ndarray) -> dict:
    """The input thumbnail and its true/predicted overlays as JPEGs; {image, true, pred: relative path}."""
    return save_jpegs(folder, overlays(thumb, true, pred), "", stem)


def save_full(folder, stem: str, image_file, true: np.ndarray, pred: np.ndarray) -> dict:
    """Full-size input and overlays (JPEG) and the raw prediction (PNG) of one image; {key: relative path}."""
    with Image.open(image_file) as im:
        image = np.asarray(im.convert("RGB"))
    paths = save_jpegs(folder, overlays(image, true, pred), "_" + FULL, stem)
    (Path(folder) / MASKS).mkdir(exist_ok=True)
    paths["mask"] = f"{MASKS}/{stem}.png"
    Image.fromarray(np.asarray(pred, np.uint8)).save(Path(folder) / paths["mask"], compress_level=1)
    return paths


def normalize_by_pred(cm: np.ndarray) -> np.ndarray:
    """Confusion matrix (rows true, columns predicted) with each predicted column summing to 1 (0 if empty)."""
    cm = np.asarray(cm, np.float64)
    col = cm.sum(axis=0, keepdims=True)
    return np.divide(cm, col, out=np.zeros_like(cm), where=col > 0)


def plot_confusion(cm: np.ndarray, names: list, path, normalized: bool) -> Path:
    """Save the pixel confusion matrix as a PNG: normalised by prediction (as the course did) or raw counts."""
    values = normalize_by_pred(cm) if normalized else np.asarray(cm)
    fig = Figure(figsize=(1.1 * len(names) + 2.5, 1.0 * len(names) + 2))
    ax = fig.subplots()
    ConfusionMatrixDisplay(values, display_labels=names).plot(
        ax=ax, cmap="Blues", colorbar=True, values_format=".2f" if normalized else ".3g", xticks_rotation=45)
    ax.set_title("pixels, normalised by prediction (columns sum to 1)" if normalized else "pixels, raw counts")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return Path(path)


def pixel_share(cm: np.ndarray, names: list) -> pd.DataFrame:
    """Per class: true and predicted pixel counts and shares over the scored (non-ignore) pixels."""
    cm = np.asarray(cm, np.int64)
    true, pred = cm.sum(axis=1), cm.sum(axis=0)
    total = max(int(cm.sum()), 1)
    return pd.DataFrame({"class": names, "true_pixels": true, "pred_pixels": pred,
                         "true_share": true / total, "pred_share": pred / total})


def worst_first(df: pd.DataFrame, key: str = "person_iou") -> pd.DataFrame:
    """Predictions table sorted by `key` ascending (worst first); images without that class (nan) last."""
    if key not in df:
        return df.reset_index(drop=True)
    return df.sort_values(key, ascending=True, na_position="last", kind="stable").reset_index(drop=True)


def _fmt(v) -> str:
    """A table cell: floats with 3 decimals, nan as an en dash."""
    if isinstance(v, (float, np.floating)):
        return "&ndash;" if math.isnan(v) else f"{v:.3f}"
    return html.escape(str(v))


def _table(df: pd.DataFrame) -> str:
    """A DataFrame as a plain HTML table."""
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><tr>{head}</tr>{body}</table>"


def _img(folder: Path, rel, alt: str, width=None, link=None) -> str:
    """An <img> tag for a file inside the report folder (linking to `link` if that file exists), or a note."""
    if not isinstance(rel, str) or not (folder / rel).is_file():
        return "<em>(no image)</em>"
    w = f' width="{width}"' if width else ""
    href = link if isinstance(link, str) and (folder / link).is_file() else rel
    img = f'<img src="{html.escape(rel)}" alt="{html.escape(alt)}"{w} loading="lazy">'
    return f'<a href="{html.escape(href)}">{img}</a>'


STYLE = """body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse;margin:.5em 0 1.5em}
td,th{border:1px solid #ccc;padding:3px 7px;text-align:right;font-size:13px}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.legend span{display:inline-block;padding:2px 8px;margin:2px;
color:#fff;text-shadow:0 0 2px #000;font-size:13px}"""


def write_index(folder, title: str, info: dict, per_class: pd.DataFrame, overall: dict,
                preds: pd.DataFrame, class_names: list) -> Path:
    """index.html: summary, per-class table, confusion matrices, pixel shares and the predictions table."""
    folder = Path(folder)
    n_full = int(preds[f"image_{FULL}"].notna().sum()) if f"image_{FULL}" in preds else 0
    legend = "".join(f'<span style="background:rgb{config.CLASS_COLORS[i]}">{html.escape(n)}</span>'
                     for i, n in enumerate(class_names))
    info_rows = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{_fmt(v)}</td></tr>" for k, v in info.items())
    overall_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in overall.items())
    iou_cols = [c for c in preds.columns if c.endswith("_iou") or c in ("miou", "pixel_acc")]
    rows = []
    for r in preds.to_dict("records"):
        cells = "".join(f"<td>{_fmt(r[c])}</td>" for c in iou_cols)
        imgs = "".join(f"<td>{_img(folder, r.get(k), str(r['file']) + ' ' + k, link=r.get(f'{k}_{FULL}'))}</td>"
                       for k in ("image", "true", "pred"))
        rows.append(f"<tr><td>{html.escape(str(r['file']))}</td>{cells}{imgs}</tr>")
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["file", *iou_cols, "image", "true mask", "predicted mask"])
    cms = "".join(_img(folder, f, f, width=520) for f in (CM_PNG, CM_COUNTS_PNG))
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body>
<h1>{html.escape(title)}</h1>
<table>{info_rows}</table>
<h2>Overall</h2><table>{overall_rows}</table>
<h2>Per class</h2>{_table(per_class)}
<p>Shares are over scored pixels (ignore = 255 excluded). Files: <a href="{METRICS_JSON}">{METRICS_JSON}</a>,
<a href="{SHARE_CSV}">{SHARE_CSV}</a>, <a href="{CM_CSV}">{CM_CSV}</a>, <a href="{PREDS_CSV}">{PREDS_CSV}</a>.</p>
<h2>Confusion matrix (pixels)</h2>{cms}
<h2>Predictions, worst person IoU first ({len(preds)} images; the first {n_full} link to full size)</h2>
<p class="legend">{legend}</p>
<table><tr>{head}</tr>{''.join(rows)}</table>
</body></html>
"""
    path = folder / INDEX
    path.write_text(page)
    return path


def write_eval_report(folder, title: str, info: dict, metrics: dict, cm: np.ndarray, class_names: list,
                 per_class: pd.DataFrame, preds: pd.DataFrame, overall: dict) -> Path:
    """Write metrics.json, eval.json, confusion matrices (PNG + CSV), pixel_share.csv, predictions.csv, index.html."""
    folder = Path(folder)
    write_json(folder / METRICS_JSON, {k: (None if isinstance(v, float) and math.isnan(v) else v)
                                       for k, v in metrics.items()})
    write_json(folder / INFO_JSON, info)
    plot_confusion(cm, class_names, folder / CM_PNG, normalized=True)
    plot_confusion(cm, class_names, folder / CM_COUNTS_PNG, normalized=False)
    pd.DataFrame(np.asarray(cm, np.int64), index=pd.Index(class_names, name="true \\ pred"),
                 columns=class_names).to_csv(folder / CM_CSV)
    pixel_share(cm, class_names).to_csv(folder / SHARE_CSV, index=False)
    preds.to_csv(folder / PREDS_CSV, index=False)
    return write_index(folder, title, info, per_class, overall, preds, class_names)


def report_name(meta: dict, model_dir, root, split: str, tta: bool = False, other_data: bool = False) -> str:
    """Report folder name: <run-name>[-<dataset>]-<split>[-tta] (dataset only when --data names another one)."""
    name = meta.get("run_name") or Path(model_dir).name
    if other_data and Path(root).name != meta.get("dataset"):
        name += f"-{Path(root).name}"
    return f"{name}-{split}" + ("-tta" if tta else "")


# ------------------------------------------------------------------ W&B
def wandb_image(img_t, true_t, pred_t, class_labels: dict):
    """wandb.Image of a thumbnail with the true and predicted masks as interactive overlays."""
    import wandb
    return wandb.Image(img_t, masks={"predictions": {"mask_data": pred_t, "class_labels": class_labels},
                                     "ground_truth": {"mask_data": true_t, "class_labels": class_labels}})


def log_wandb(run, metrics: dict, folder, preds: pd.DataFrame, images: dict, names: list):
    """Metrics to the run summary; confusion matrices and the predictions table (worst person IoU first; images for
    the worst `report_images` rows only)."""
    import wandb
    run.summary.update({k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))})
    iou_cols = [f"{config.class_key(n)}_iou" for n in names]
    table = wandb.Table(columns=["File_Name", "Images", *[f"iou_{n}" for n in names], "miou"])
    for r in preds.to_dict("records"):
        table.add_data(r["file"], images.get(r["file"]), *[r[c] for c in iou_cols], r["miou"])
    run.log({"confusion_matrix": wandb.Image(str(Path(folder) / CM_PNG)),
             "confusion_matrix_counts": wandb.Image(str(Path(folder) / CM_COUNTS_PNG)),
             "predictions": table})


# ------------------------------------------------------------------ console
def print_summary(per_class: pd.DataFrame, metrics: dict, split: str, info: dict, folder, wandb_where: str):
    """One screen: per-class table, miou, pixel accuracy, loss, and where the report and the W&B run are."""
    print(f"\n{info['model_name']} on {info['data']} [{split}, {info['images']} images, "
          f"tta={'on' if info['tta'] else 'off'}, {info['precision']}]")
    print(per_class.to_string(index=False, float_format=lambda v: f"{v:.3f}", na_rep="-"))
    print(f"{split}_miou {metrics[f'{split}_miou']:.4f}   {split}_pixel_acc {metrics[f'{split}_pixel_acc']:.4f}   "
          f"{split}_loss {metrics[f'{split}_loss']:.4f}")
    print(f"report: {Path(folder) / INDEX}")
    print(f"W&B run {wandb_where}")
