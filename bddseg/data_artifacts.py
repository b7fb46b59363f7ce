"""The data step's W&B side: the raw folder as a `raw_data` artifact with an EDA table of thumbnails, the processed
folder as a `split_data` artifact with the split table (lineage raw -> split online), both in the data's own
project (config.DATA_PROJECT / DATA_ENTITY), where train.py and eval.py look them up."""
from bddseg import config
from bddseg.eda import summarize
from bddseg.resolve import data_entity
from bddseg.wb import init_wandb, is_online, wandb_mode, where_logged

TABLE_MAX_ROWS = 1000  # W&B EDA table: first N images (thumbnails), so the step stays fast on big imports


def data_entity_if_online():
    """The entity the data artifacts go to (and train/eval look them up in): resolve.data_entity(); None offline."""
    return data_entity() if wandb_mode() == "online" else config.DATA_ENTITY


def eda_table(eda, done):
    """W&B table: thumbnail with its mask overlaid, file, video and per-class pixel shares."""
    import wandb
    labels = {**{c: n for c, n in config.BDD_CLASSES.items()}, config.IGNORE: "ignore"}
    cols = ["File_Name", "video", "image"] + [f"{k}_share" for k in config.CLASS_KEYS]
    table = wandb.Table(columns=cols)
    for r, row in zip(done, eda.itertuples(index=False)):
        if r.thumb is None:
            continue
        masks = {"ground_truth": {"mask_data": r.thumb_mask, "class_labels": labels}}
        img = wandb.Image(r.thumb, file_type="jpg", masks=masks)
        table.add_data(row.File_Name, row.video, img, *[getattr(row, c) for c in cols[3:]])
    return table


def log_raw(raw, eda, done, info, name):
    """Log the raw folder as a `raw_data` artifact (+ EDA table) from an `upload` run; returns (run dir, artifact)."""
    import wandb
    run = init_wandb(project=config.DATA_PROJECT, entity=data_entity_if_online(), job_type="upload",
                     config={**info, "name": name})
    art = wandb.Artifact(name, type="raw_data", metadata={**info, "n_images": len(eda)})
    art.add_dir(str(raw))
    art.add(eda_table(eda, done), "eda_table")
    run.log_artifact(art)
    shares = summarize(eda).pixel_share
    run.summary.update({f"{key}_pixel_share": v for key, v in zip(config.CLASS_KEYS, shares)})
    where = where_logged(run)
    if is_online(run):
        art.wait()
    run.finish()
    return where, art


def log_split(proc, split_df, raw_art, meta, name):
    """Log the processed folder as a `split_data` artifact (+ split table) from a `data_split` run."""
    import wandb
    run = init_wandb(project=config.DATA_PROJECT, entity=data_entity_if_online(), job_type="data_split", config=meta)
    if is_online(run) and raw_art is not None:
        run.use_artifact(raw_art)  # lineage raw -> split (use_artifact does not work offline)
    art = wandb.Artifact(name, type="split_data", metadata=meta)
    art.add_dir(str(proc))
    art.add(wandb.Table(dataframe=split_df), "data_split")
    run.log_artifact(art)
    where = where_logged(run)
    run.finish()
    return where
