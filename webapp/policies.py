"""The Policies tab: fit a policy from an uploaded examples file, see its cross-validated figures and the examples
it got wrong, list and remove the policies; and what every run needs from them (the guard answering them, one
chip per policy on Analyze, a flag that names a policy and a label).

The policies live in one folder, one sub-folder per policy (``guardreasoner.policy.save_policy``): the folder
GUARDREASONER_POLICY_DIR names; else ``policies/`` under the persistent storage a Hugging Face Space mounts at
/data (GUARDREASONER_PERSISTENT_ROOT names another root), when it exists; else ``policies/`` in the working
folder. Every run answers the policies in that folder at that moment, without loading the model again
(``guardreasoner.policy.with_policies``).
"""

from __future__ import annotations

import html
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from guardreasoner.errors import GuardReasonerError
from guardreasoner.policy import (
    CARD_FILE,
    PolicyError,
    fit_policy,
    flag_examples,
    read_examples,
    save_policy,
    with_policies,
)
from guardreasoner.results import CATEGORY_LABELS

from .flags import persistent_root, queue_path

POLICY_DIR_ENV = "GUARDREASONER_POLICY_DIR"
DEFAULT_DIR = Path("policies")
# The figures before the long texts, so that they are in view; widths that keep each header's words whole.
LIST_HEADERS = ["policy", "cross-validated F1", "examples (positive / negative)", "description"]
LIST_WIDTHS = ["220px", "120px", "130px", "640px"]
MISCLASSIFIED_HEADERS = ["line", "its label", "p (positive)", "prompt", "response"]
MISCLASSIFIED_WIDTHS = ["64px", "100px", "120px", "420px", "420px"]
# Chip backgrounds dark enough for white text at >= 4.5:1 (WCAG AA), as the verdict chips (views.COLORS).
CHIP_COLORS = {"positive": "#6a1b9a", "negative": "#5f6368", "n/a": "#5f6368"}
log = logging.getLogger(__name__)


def policy_dir() -> Path:
    """Where the app keeps its policies (read at every call: a test or an operator may point it elsewhere)."""
    if os.environ.get(POLICY_DIR_ENV):
        return Path(os.environ[POLICY_DIR_ENV])
    root = persistent_root()
    return root / DEFAULT_DIR if root else DEFAULT_DIR


def policy_folders(root: Path | None = None) -> list[Path]:
    """The policy folders (those holding a card), by name."""
    root = root or policy_dir()
    if not root.is_dir():
        return []
    return sorted(folder for folder in root.iterdir() if (folder / CARD_FILE).is_file())


def read_card(folder: Path) -> dict:
    try:
        return json.loads((folder / CARD_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # half-removed or hand-edited: listed by name, and the run that loads it says what is wrong


def policy_names(root: Path | None = None) -> list[str]:
    return [folder.name for folder in policy_folders(root)]


# ---- The guard answering the folder's policies ----

# Per guard of the pool: (that guard, the folder's state it was wrapped for, the wrapped guard). Keyed by id and
# holding the guard, so an id is never reused while its entry lives. No lock: on ZeroGPU a GPU worker forked while
# another thread held it would wait forever (webapp/gpu.py); two threads wrapping at once only do it twice.
_ANSWERING: dict[int, tuple[object, tuple, object]] = {}
PROBLEMS: dict[str, str] = {}  # policy name -> why the runs cannot use it (shown in the list)


def folder_state(folders: list[Path]) -> tuple:
    state = []
    for folder in folders:
        try:
            state.append((str(folder), (folder / CARD_FILE).stat().st_mtime_ns))
        except OSError:
            continue  # removed in between: not a policy any more
    return tuple(state)


def answering(guard, root: Path | None = None):
    """``guard`` answering the policies in the folder now: wrapped again only when a policy was added, refitted
    or removed, and never by loading the model again. A policy that cannot be used here (fitted on another
    encoder, a broken folder) is left out, and the Policies tab says why, rather than stopping every run."""
    state = folder_state(policy_folders(root))
    cached = _ANSWERING.get(id(guard))
    if cached is not None and cached[0] is guard and cached[1] == state:
        return cached[2]
    folders = [Path(folder) for folder, _ in state]
    try:
        wrapped = with_policies(guard, folders)
    except PolicyError:
        usable = []
        for folder in folders:
            try:
                with_policies(guard, [folder])
                usable.append(folder)
                PROBLEMS.pop(folder.name, None)
            except PolicyError as error:
                PROBLEMS[folder.name] = str(error)
                log.warning("policy %s left out: %s", folder.name, error)
        wrapped = with_policies(guard, usable)
    else:
        for folder in folders:
            PROBLEMS.pop(folder.name, None)
    _ANSWERING[id(guard)] = (guard, state, wrapped)
    return wrapped


# ---- The Policies tab ----

_FIT_SCREEN = []  # the encoder screen policies are fitted on, loaded at the first fit


def fit_screen():
    """The shipped encoder screen: the one every model of the pool is loaded with (``state._load``), so a policy
    fitted here reads the same representation the runs compute."""
    if not _FIT_SCREEN:
        from guardreasoner.screen import load_screen, shipped_screen_folder

        folder = shipped_screen_folder()
        if folder is None:
            raise PolicyError("no encoder screen is installed here, and policies are fitted on its representation")
        _FIT_SCREEN.append(load_screen(folder))
    return _FIT_SCREEN[0]


def listing(root: Path | None = None) -> dict:
    """The list of policies as the tab's table shows it."""
    rows = []
    for folder in policy_folders(root):
        card = read_card(folder)
        counts = card.get("examples") or {}
        f1 = (card.get("cross_validation") or {}).get("f1")
        description = card.get("description") or ""
        if card.get("kind") == "text":
            description = f"(a written policy, asked of {card.get('model') or 'a served model'}) {description}"
        if folder.name in PROBLEMS:
            description = f"NOT IN USE: {PROBLEMS[folder.name]} {description}"
        rows.append([folder.name, f"{f1:.1f}" if isinstance(f1, (int, float)) else "",
                     f"{counts['positive']} / {counts['negative']}" if counts else "", description.strip()])
    return {"headers": LIST_HEADERS, "data": rows}


def choices_update(root: Path | None = None):
    return gr.update(choices=policy_names(root), value=None)


def refresh(root: Path | None = None) -> tuple:
    """The list, the remove choice and the flag's policy choice, as the folder holds them now."""
    return listing(root), choices_update(root), gr.update(choices=policy_names(root))


def describe_fit(card: dict, folder: Path, flagged: int, replaced: bool) -> str:
    cv, counts = card["cross_validation"], card["examples"]
    wrong = len(card["misclassified"])
    from_flags = f", {flagged} of them from reviewers' flags" if flagged else ""
    return "\n".join([
        f"**{'Refitted' if replaced else 'Fitted'} {card['name']}** on {counts['positive']} positive and "
        f"{counts['negative']} negative examples{from_flags}, in {card['fit_seconds']:.1f} s.",
        "",
        f"Cross-validated ({cv['folds']} folds, each example scored by a head fitted without it): "
        f"**F1 {cv['f1']:.1f}**, precision {cv['precision']:.1f}, recall {cv['recall']:.1f}, "
        f"ROC AUC {cv['roc_auc']:.3f}; threshold p ≥ {card['threshold']:.2f}.",
        "",
        (f"{wrong} example(s) misclassified out of fold, listed below." if wrong
         else "No example was misclassified out of fold."),
        "",
        f"Saved as {folder.name}: every Analyze and Batch run answers it from now on.",
    ])


def fit(name: str, upload, root: Path | None = None) -> tuple:
    """Fit a policy from an uploaded examples file (plus the flags in the app's queue that name it) and save it;
    on bad input, the message says what is wrong and nothing is written. Returns (message, misclassified table,
    list, remove choice, flag's policy choice)."""
    root = root or policy_dir()
    name = (name or "").strip()
    unchanged = (gr.update(value=None, visible=False), *refresh(root))
    if not name:
        return "**Not fitted:** name the policy first (letters, digits, '-' and '_').", *unchanged
    if upload is None:
        return ("**Not fitted:** choose an examples file (CSV or JSONL with `prompt`, optional `response`, and "
                "`label` 1/0 or positive/negative; at least 16 of each).", *unchanged)
    try:
        examples, description = read_examples(upload)
        queue = queue_path()
        flagged = flag_examples(queue, name) if queue.is_file() else []
        policy = fit_policy(name, examples + flagged, fit_screen(), description=description)
        replaced = (root / name).exists()
        folder = save_policy(policy, root / name)
        PROBLEMS.pop(name, None)  # a new fit on this encoder: whatever kept the old one out is gone
    except GuardReasonerError as error:  # a PolicyError names the upload by its temporary path: say its name
        said = str(error).replace(str(upload), Path(upload).name)
        return f"**Not fitted, nothing saved:** {said}", *unchanged
    wrong = [[item["line"], item["label"], f"{item['p']:.2f}", item["prompt"], item.get("response") or ""]
             for item in policy.card["misclassified"]]
    table = gr.update(value={"headers": MISCLASSIFIED_HEADERS, "data": wrong}, visible=bool(wrong))
    return describe_fit(policy.card, folder, len(flagged), replaced), table, *refresh(root)


def remove(name: str | None, root: Path | None = None) -> tuple:
    """Remove a listed policy (only a listed name: never a path). Returns (message, list, remove choice, flag's
    policy choice)."""
    root = root or policy_dir()
    if not name or name not in policy_names(root):
        return "Choose a policy to remove.", *refresh(root)
    shutil.rmtree(root / name)
    PROBLEMS.pop(name, None)
    return f"Removed {name}: runs no longer answer it.", *refresh(root)


@dataclass
class PolicyTab:
    name: gr.Textbox
    upload: gr.UploadButton
    fit_button: gr.Button
    message: gr.Markdown
    misclassified: gr.Dataframe
    table: gr.Dataframe
    remove_choice: gr.Dropdown
    remove_button: gr.Button


def build_tab() -> PolicyTab:
    """The tab's components (inside ``gr.Tab("Policies")``)."""
    gr.Markdown("Your own policy, learned from labelled examples: a CSV or JSONL file with `prompt`, optional "
                "`response`, and `label` (1/0 or positive/negative), at least 16 of each, optionally opening "
                "with a `# description: ...` line (see docs/policies). Each result then says, per policy, "
                "whether the item falls under it, beside the three verdicts.")
    with gr.Row():
        name = gr.Textbox(label="Policy name", placeholder="medical-self-treatment", elem_id="policy-name")
        upload = gr.UploadButton("Choose an examples file (CSV or JSONL)", file_types=[".csv", ".jsonl", ".json"],
                                 elem_id="policy-upload")
    fit_button = gr.Button("Fit policy", variant="primary", elem_id="policy-fit")
    message = gr.Markdown(elem_id="policy-message")
    misclassified = gr.Dataframe(headers=MISCLASSIFIED_HEADERS, interactive=False, wrap=True, visible=False,
                                 column_widths=MISCLASSIFIED_WIDTHS, label="Misclassified out of fold",
                                 elem_id="policy-misclassified")
    table = gr.Dataframe(value=listing(), interactive=False, wrap=True, column_widths=LIST_WIDTHS,
                         label="Policies in use", elem_id="policy-list")
    with gr.Row():
        remove_choice = gr.Dropdown(policy_names(), value=None, label="Policy to remove", elem_id="policy-remove")
        # Secondary: the theme's red "stop" button holds white text at less than 4.5:1.
        remove_button = gr.Button("Remove policy", variant="secondary", elem_id="policy-remove-button")
    return PolicyTab(name, upload, fit_button, message, misclassified, table, remove_choice, remove_button)


def wire(tab: PolicyTab, flag_policy: gr.Dropdown, demo: gr.Blocks) -> None:
    """The tab's events; the flag's policy choice follows the list."""
    tab.upload.upload(lambda file: f"Ready to fit {Path(file).name}." if file else "", tab.upload, tab.message,
                      api_name=False)
    tab.fit_button.click(lambda name, upload: fit(name, upload), [tab.name, tab.upload],
                         [tab.message, tab.misclassified, tab.table, tab.remove_choice, flag_policy],
                         api_name=False)
    tab.remove_button.click(lambda name: remove(name), tab.remove_choice,
                            [tab.message, tab.table, tab.remove_choice, flag_policy], api_name=False)
    # Another visitor (or a restart) may have changed the folder since the page was built.
    demo.load(lambda: refresh(), None, [tab.table, tab.remove_choice, flag_policy], api_name=False, queue=False)


# ---- The Analyze tab: a chip per policy; the flag's policy ----

def category_chips(result: dict | None) -> str:
    """One chip per policy of a result (``medical-self-treatment: positive 0.93``); nothing without a result or
    without policies."""
    chips = []
    for name, category in ((result or {}).get("categories") or {}).items():
        label, p = category.get("label"), category.get("p")
        state = label if label in CATEGORY_LABELS else "n/a"
        text = f"{name}: {label or 'no answer'}" + (f" {p:.2f}" if p is not None else "")
        note = category.get("rationale") or ""
        chips.append(f'<span class="policy-chip" data-policy="{html.escape(name)}" data-state="{state}" '
                     f'title="{html.escape(note)}" style="display:inline-block;padding:4px 12px;border-radius:14px;'
                     f'margin:2px 6px 2px 0;color:#fff;font-weight:600;font-family:sans-serif;'
                     f'background:{CHIP_COLORS[state]}">{html.escape(text)}</span>')
    return f'<div id="policy-chips">{"".join(chips)}</div>' if chips else '<div id="policy-chips"></div>'


def flag_inputs() -> tuple[gr.Dropdown, gr.Radio]:
    """In the flag accordion: a policy (listed, or a new name) and the label the item should get for it."""
    with gr.Row():
        policy = gr.Dropdown(policy_names(), value=None, allow_custom_value=True,
                             label="Policy (optional): the item's label for it is wrong", elem_id="flag-policy")
        label = gr.Radio(list(CATEGORY_LABELS), label="For that policy the item is", elem_id="flag-policy-label")
    return policy, label


def flag_policy(policy: str | None, label: str | None) -> tuple[str | None, str | None]:
    """The policy and label a flag carries: both or neither; a name a policy could have."""
    policy = (policy or "").strip() or None
    if policy is None and not label:
        return None, None
    if policy is None:
        raise gr.Error("Name the policy whose label you chose, or clear the label.")
    if label not in CATEGORY_LABELS:
        raise gr.Error(f"Choose whether the item is positive or negative for {policy}.")
    if not policy.replace("-", "").replace("_", "").isalnum():
        raise gr.Error(f"Policy name {policy!r}: use letters, digits, '-' and '_'.")
    return policy, label
