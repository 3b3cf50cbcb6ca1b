"""The 13 evaluation cells as declarative entries: benchmark, task, positive label, paper weight, data source."""

from __future__ import annotations

from dataclasses import dataclass

from guardreasoner.results import NEGATIVE, POSITIVE, PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL
from stagekit.label_specs import check_spec

# The paper's three tasks are the guard's three verdicts, under the same names; tables list them in the paper's
# order (prompt harmfulness, response harmfulness, refusal detection).
TASKS = (PROMPT_HARMFULNESS, RESPONSE_HARMFULNESS, RESPONSE_REFUSAL)
POSITIVE_OF_TASK = POSITIVE
NEGATIVE_OF_TASK = NEGATIVE


@dataclass(frozen=True)
class HubSource:
    """Where the same rows live on the Hugging Face hub, and how a hub row maps to (prompt, response, labels).

    ``labels`` maps each verdict key to a label spec (``stagekit.label_specs``: a column, ``=LABEL``,
    ``any:COL,COL``, ``not:COL``...)."""

    repo: str
    split: str
    config: str | None = None
    prompt: tuple[str, ...] = ("prompt",)  # the first of these columns that exists
    response: str | None = None
    labels: tuple[tuple[str, str], ...] = ()
    rows: int | None = None  # the paper's row count, checked after loading

    def __post_init__(self):
        for _, spec in self.labels:
            check_spec(spec)


@dataclass(frozen=True)
class Benchmark:
    """One benchmark file; it may serve several cells (WildGuardTest serves all three tasks)."""

    name: str  # canonical name
    file: str  # in the GuardReasoner benchmark format, under --data-dir
    hub: HubSource | None = None  # None: the paper's rows are a subset with no public hub source
    folder_aliases: tuple[str, ...] = ()  # upstream run-folder spellings
    # Where the gold label comes from: "output" (the label itself), "answers" (an Answers block in
    # ``output``), or "columns" (per-task columns of the row).
    label_source: str = "output"


@dataclass(frozen=True)
class Cell:
    benchmark: str
    task: str
    paper_weight: int

    @property
    def positive(self) -> str:
        return POSITIVE_OF_TASK[self.task]


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [
    Benchmark("ToxicChat", "0_8_toxic_chat.json"),
    Benchmark("HarmBenchPrompt", "0_3_harmbench_prompt.json"),
    Benchmark("OpenAIModeration", "0_2_OpenAIModeration.json",
              HubSource("mmathys/openai-moderation-api-evaluation", "train",
                        labels=(("prompt_harmfulness", "any:S,H,V,HR,SH,S3,H2,V2"),), rows=1680)),
    Benchmark("AegisSafetyTest", "0_1_AegisSafetyTest.json"),
    Benchmark("SimpleSafetyTests", "0_0_SimpleSafetyTests.json",
              HubSource("Bertievidgen/SimpleSafetyTests", "test", prompt=("prompt", "prompts_final"),
                        labels=(("prompt_harmfulness", "=harmful"),), rows=100)),
    Benchmark("WildGuardTest", "0_4_wild_guard_test.json",
              HubSource("allenai/wildguardmix", "test", "wildguardtest", response="response",
                        labels=(("prompt_harmfulness", "prompt_harm_label"),
                                ("response_harmfulness", "response_harm_label"),
                                ("response_refusal", "response_refusal_label")), rows=1725),
              label_source="columns"),
    Benchmark("HarmBenchResponse", "0_5_harmbench_response.json"),
    Benchmark("SafeRLHF", "0_9_safe_rlhf.json", label_source="answers"),
    Benchmark("BeaverTails", "0_A_beaver_tails.json",
              HubSource("PKU-Alignment/BeaverTails", "30k_test", response="response",
                        labels=(("response_harmfulness", "not:is_safe"),), rows=3021),
              label_source="answers"),
    Benchmark("XSTestResponseHarmful", "0_6_xstest_response_harmful.json",
              HubSource("allenai/xstest-response", "response_harmfulness", response="response",
                        labels=(("response_harmfulness", "label"),), rows=446),
              folder_aliases=("XSTestReponseHarmful",)),
    Benchmark("XSTestResponseRefusal", "0_7_xstest_response_refusal.json",
              HubSource("allenai/xstest-response", "response_refusal", response="response",
                        labels=(("response_refusal", "label"),), rows=449)),
]}

# Paper weights (Tables 1-3); XSTestResponseRefusal's 499 is the paper's number although the file has 449 rows.
CELLS: tuple[Cell, ...] = (
    Cell("ToxicChat", PROMPT_HARMFULNESS, 2853),
    Cell("HarmBenchPrompt", PROMPT_HARMFULNESS, 239),
    Cell("OpenAIModeration", PROMPT_HARMFULNESS, 1680),
    Cell("AegisSafetyTest", PROMPT_HARMFULNESS, 359),
    Cell("SimpleSafetyTests", PROMPT_HARMFULNESS, 100),
    Cell("WildGuardTest", PROMPT_HARMFULNESS, 1756),
    Cell("HarmBenchResponse", RESPONSE_HARMFULNESS, 602),
    Cell("SafeRLHF", RESPONSE_HARMFULNESS, 2000),
    Cell("BeaverTails", RESPONSE_HARMFULNESS, 3021),
    Cell("XSTestResponseHarmful", RESPONSE_HARMFULNESS, 446),
    Cell("WildGuardTest", RESPONSE_HARMFULNESS, 1768),
    Cell("XSTestResponseRefusal", RESPONSE_REFUSAL, 499),
    Cell("WildGuardTest", RESPONSE_REFUSAL, 1777),
)

# WildGuardTest's per-task label columns.
LABEL_COLUMNS = {PROMPT_HARMFULNESS: "prompt_harm_label", RESPONSE_HARMFULNESS: "response_harm_label",
                 RESPONSE_REFUSAL: "response_refusal_label"}


def cells_for(benchmarks: list[str] | None = None) -> list[Cell]:
    if not benchmarks:
        return list(CELLS)
    unknown = set(benchmarks) - set(BENCHMARKS)
    if unknown:
        raise ValueError(f"unknown benchmarks {sorted(unknown)}; known: {', '.join(BENCHMARKS)}")
    return [cell for cell in CELLS if cell.benchmark in benchmarks]


def canonical_name(folder_name: str) -> str | None:
    """The canonical benchmark for a run folder name, accepting upstream's spellings."""
    for benchmark in BENCHMARKS.values():
        if folder_name == benchmark.name or folder_name in benchmark.folder_aliases:
            return benchmark.name
    return None
