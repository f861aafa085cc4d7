"""The report sets our scores beside the paper's numbers for the run's own base model: per
language, a six-language mean only when all six ran, paper numbers marked by provenance."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from pathlib import Path

import pytest
from wavecoder.finetune.tuned import TunedModel
from wavecoder.report import paper
from wavecoder.report import stage as report
from wavecoder.stages import FINETUNE

DEEPSEEK = "deepseek-ai/deepseek-coder-6.7b-base"
TASKS = ("synthesize", "fix", "explain")


def fake_rows(languages=paper.LANGUAGES, models=("base", "tuned")) -> list[dict]:
    """Stage-04 score rows with distinct made-up pass@1 values for every benchmark."""
    names = ["humaneval", "mbpp"] + [
        f"humanevalpack-{task}-{lang}" for task in TASKS for lang in languages
    ]
    rows = []
    for m, model in enumerate(models):
        for i, name in enumerate(names):
            rows.append(
                {
                    "model": model,
                    "benchmark": name,
                    "problems": 500 if name == "mbpp" else 164,
                    "pass@1": round(0.01 * (i + 1) + 0.3 * m, 4),
                }
            )
    return rows


def ours(rows, model, bench):
    return next(r["pass@1"] for r in rows if r["model"] == model and r["benchmark"] == bench)


PAPER_SETTINGS_RUN = {
    "base_model": DEEPSEEK,
    "languages": list(paper.LANGUAGES),
    "prompt_style": {"base": "completion", "tuned": "wizardcoder"},
    "postprocess": "reference",
    "examples": 19915,
    "task_mix": {f"code_{task}": n for task, n in paper.TASK_MIX.items()},
    "finetune_method": "full",
    "epochs": 3,
    "learning_rate": 5e-5,
    "max_seq_length": 2048,
    "batch_size": 512,
    "optimizer": "adafactor",
    "decoding": {"strategy": "greedy", "n_samples": 1, "max_new_tokens": 512},
    "generator_model": "gpt-3.5-turbo",
    "judge_model": "gpt-4",
}


class Tables(HTMLParser):
    """Every <table> of a page as {"class": ..., "rows": [[cell text, ...], ...]}."""

    def __init__(self):
        super().__init__()
        self.tables: list[dict] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append({"class": dict(attrs).get("class"), "rows": []})
        elif tag == "tr" and self.tables:
            self.tables[-1]["rows"].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1]["rows"][-1].append("".join(self._cell))
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def html_table(text: str, css_class: str) -> list[dict[str, str]]:
    parser = Tables()
    parser.feed(text)
    (table,) = [t for t in parser.tables if t["class"] == css_class]
    head, *body = table["rows"]
    return [dict(zip(head, row, strict=True)) for row in body]


def write_run(tmp_path: Path, rows, settings) -> Path:
    run = tmp_path / "run"
    (run / "04_evaluate").mkdir(parents=True)
    metrics = {"headline": "h", "scores": {"rows": rows}, "settings": settings}
    (run / "04_evaluate" / "metrics.json").write_text(json.dumps(metrics))
    return run


# ------------------------------------------------------------------- the paper's numbers


def test_paper_data_is_consistent():
    # each printed average is the mean of its six languages (to the paper's rounding)
    for table in (paper.TABLE4, paper.TABLE5):
        for (model, role), (values, avg, source) in table.items():
            assert model in paper.MODELS and role in ("base", "tuned")
            assert len(values) == 6 and source in paper.SOURCES
            assert abs(sum(values) / 6 - avg) <= 0.1, (model, role)
    # Table 3's printed deltas are tuned minus base, but for one the paper itself disagrees:
    # WaveCoder-SC-15B MBPP 51.0 (+7.4) beside StarCoder's 43.3
    for model, (d_he, d_mbpp) in paper.TABLE3_PRINTED_DELTAS.items():
        base, tuned = paper.TABLE3[(model, "base")], paper.TABLE3[(model, "tuned")]
        assert round(tuned[0] - base[0], 1) == d_he
        if model == "starcoder-15b":
            assert (base[1], tuned[1], d_mbpp) == (43.3, 51.0, 7.4)
            continue
        assert round(tuned[1] - base[1], 1) == d_mbpp
    # the headline of the paper's abstract and Table 6
    ds_base, ds_tuned = (
        paper.scores("deepseek-coder-6.7b", "base"),
        paper.scores("deepseek-coder-6.7b", "tuned"),
    )
    assert [ds_tuned[k][0] for k in ("humaneval", "mbpp")] == [64.0, 62.8]
    assert [ds_base[k][0] for k in ("humaneval", "mbpp")] == [49.4, 60.6]
    assert ds_tuned["humanevalpack-fix-avg"][0] == 49.4
    assert ds_tuned["humanevalpack-explain-avg"][0] == 41.3
    assert ds_base["humanevalpack-fix-avg"][0] == 29.0
    assert ds_base["humanevalpack-explain-avg"][0] == 34.6
    assert ds_tuned["humanevalpack-fix-python"] == (57.9, "table4")
    # what the paper does not print stays absent
    assert "humanevalpack-synthesize-python" not in ds_tuned
    assert "humanevalpack-fix-python" not in paper.scores("codellama-7b", "base")
    # base numbers taken from elsewhere are marked so
    assert paper.SOURCES[ds_base["humaneval"][1]]["elsewhere"] is True
    assert paper.SOURCES[paper.scores("starcoder-15b", "base")["mbpp"][1]]["elsewhere"] is None


@pytest.mark.parametrize(
    "name,key",
    [
        (DEEPSEEK, "deepseek-coder-6.7b"),
        ("DeepSeek-AI/DeepSeek-Coder-6.7B-Base/", "deepseek-coder-6.7b"),
        ("codellama/CodeLlama-7b-hf", "codellama-7b"),
        ("codellama/CodeLlama-13b-hf", "codellama-13b"),
        ("bigcode/starcoder", "starcoder-15b"),
        ("/hf/hub/models--bigcode--starcoder/snapshots/abc", "starcoder-15b"),
        ("bigcode/starcoderbase", None),
        ("deepseek-ai/deepseek-coder-6.7b-instruct", None),
        ("outputs/cache/models/smollm2", None),
        ("/models/deepseek-coder-6.7b-base", None),
        (None, None),
    ],
)
def test_model_for_names_only_the_same_weights(name, key):
    assert paper.model_for(name) == key


# ------------------------------------------------------------------- the comparison rows


def test_every_cell_against_the_papers_table_deepseek(tmp_path):
    rows = fake_rows()
    result = report.comparison({"rows": rows}, PAPER_SETTINGS_RUN)
    assert result["paper_model"] == "deepseek-coder-6.7b"
    assert result["notes"] == []
    by_bench = {r["benchmark"]: r for r in result["rows"]}
    want = {role: paper.scores("deepseek-coder-6.7b", role) for role in ("base", "tuned")}
    expected = ["humaneval", "mbpp"]
    for task in TASKS:
        expected += [f"humanevalpack-{task}-{lang}" for lang in paper.LANGUAGES]
        expected.append(f"humanevalpack-{task}-avg")
    assert [r["benchmark"] for r in result["rows"]] == expected
    for bench, row in by_bench.items():
        for role in ("base", "tuned"):
            value, source = want[role].get(bench, (None, None))
            assert row[f"paper_{role}"] == value, (bench, role)
            assert row[f"paper_{role}_source"] == source, (bench, role)
            if not bench.endswith("-avg"):
                assert row[role] == round(100 * ours(rows, role, bench), 1)
    # spot checks against the paper as printed (Tables 3-5)
    assert (by_bench["humaneval"]["paper_base"], by_bench["humaneval"]["paper_tuned"]) == (
        49.4,
        64.0,
    )
    assert by_bench["humanevalpack-fix-js"]["paper_tuned"] == 52.4
    assert by_bench["humanevalpack-fix-js"]["paper_base"] == 29.2
    assert by_bench["humanevalpack-explain-cpp"]["paper_tuned"] == 48.2
    assert by_bench["humanevalpack-explain-avg"]["paper_tuned"] == 41.3
    assert by_bench["humanevalpack-synthesize-go"]["paper_tuned"] is None
    # our averages are the mean of our six languages
    for task in TASKS:
        avg = by_bench[f"humanevalpack-{task}-avg"]
        for role in ("base", "tuned"):
            raw = [ours(rows, role, f"humanevalpack-{task}-{lang}") for lang in paper.LANGUAGES]
            assert avg[role] == round(100 * sum(raw) / 6, 1)

    # the HTML shows the same cells
    run = write_run(tmp_path, rows, PAPER_SETTINGS_RUN)
    text = report.build_report(run, run / "report.html").read_text()
    shown = {r["benchmark"]: r for r in html_table(text, "scores")}
    assert list(shown) == expected
    for bench, row in by_bench.items():
        for role in ("base", "tuned"):
            cell = shown[bench][f"paper {role}"]
            value, source = want[role].get(bench, (None, None))
            if value is None:
                assert cell == "not found"
                continue
            mark = {True: "\u2020", None: "\u2021", False: ""}[paper.SOURCES[source]["elsewhere"]]
            assert cell == f"{value:.1f}{mark}", (bench, role, cell)
            assert shown[bench][role] == f"{row[role]:.1f}"
    assert shown["humaneval"]["paper base"] == "49.4\u2020"  # DeepSeek-Coder's own report
    assert shown["humaneval"]["paper tuned"] == "64.0"
    assert shown["humanevalpack-fix-python"]["paper base"] == "29.9\u2021"  # source unstated
    assert shown["humanevalpack-fix-avg"]["paper tuned"] == "49.4"
    assert "reported elsewhere (Table 3)" in text and "source not stated" in text
    assert "DeepseekCoder-6.7B" in text and "WaveCoder-DS-6.7B" in text
    # a run set up as the paper: nothing differs
    settings = {r["setting"]: r for r in html_table(text, "settings")}
    assert {r["status"] for r in settings.values()} == {"same"}, settings
    assert "Settings: 0 differ" in text


def test_two_languages_give_no_average_and_say_which_are_missing(tmp_path):
    rows = fake_rows(languages=("python", "js"))
    result = report.comparison({"rows": rows}, {"base_model": DEEPSEEK})
    benches = [r["benchmark"] for r in result["rows"]]
    assert not [b for b in benches if b.endswith("-avg")]
    assert "humanevalpack-fix-python" in benches and "humanevalpack-fix-js" in benches
    fix = next(r for r in result["rows"] if r["benchmark"] == "humanevalpack-fix-js")
    assert (fix["paper_base"], fix["paper_tuned"]) == (29.2, 52.4)  # JS, not the average
    note = (
        "humanevalpack-fix: no six-language average for base or tuned; not run: java, go, cpp, rust"
    )
    assert note in result["notes"]
    run = write_run(tmp_path, rows, {"base_model": DEEPSEEK, "batch_size": 8})
    text = report.build_report(run, run / "report.html").read_text()
    shown = [r["benchmark"] for r in html_table(text, "scores")]
    assert not [b for b in shown if b.endswith("-avg")]
    assert "not run: java, go, cpp, rust" in text
    settings = {r["setting"]: r for r in html_table(text, "settings")}
    assert settings["languages"]["status"] == "differs"
    assert settings["batch size (global)"]["status"] == "differs"
    assert settings["optimizer"]["status"] == "not recorded"


def test_one_model_with_all_six_gets_its_average_alone():
    rows = [
        r
        for r in fake_rows()
        if r["model"] == "tuned"
        or "humanevalpack" not in r["benchmark"]
        or r["benchmark"] == "humanevalpack-fix-python"
    ]
    result = report.comparison({"rows": rows}, {"base_model": DEEPSEEK})
    avg = next(r for r in result["rows"] if r["benchmark"] == "humanevalpack-fix-avg")
    assert avg["base"] is None and avg["tuned"] is not None and avg["delta"] is None
    assert (avg["paper_base"], avg["paper_tuned"]) == (29.0, 49.4)
    note = "humanevalpack-fix: no six-language average for base; not run: js, java, go, cpp, rust"
    assert note in result["notes"]


def test_a_base_model_without_a_paper_row_shows_ours_only(tmp_path):
    rows = fake_rows()
    settings = {"base_model": "outputs/cache/models/smollm2-<b>", "model": "tiny <script>"}
    result = report.comparison({"rows": rows}, settings)
    assert result["paper_model"] is None
    for row in result["rows"]:
        assert row["paper_base"] is None and row["paper_tuned"] is None
    run = write_run(tmp_path, rows, settings)
    text = report.build_report(run, run / "report.html").read_text()
    assert "No paper row for this base model" in text
    table = html_table(text, "scores")
    assert "paper base" not in table[0] and "paper tuned" not in table[0]
    for number in ("64.0", "62.8", "49.4", "41.3", "57.9"):
        assert number not in text
    assert "<script>" not in text and "&lt;script&gt;" in text  # escaped, shown under "other"
    assert "smollm2-&lt;b&gt;" in text


def test_base_model_falls_back_to_stage_03_and_scores_rows_keeps_working(tmp_path):
    rows = fake_rows(languages=("python",))
    run = write_run(tmp_path, rows, {})
    folder = FINETUNE.folder(run)
    folder.mkdir()
    TunedModel(
        method="full", base_model=DEEPSEEK, base_model_path="/models/deepseek", prompt="alpaca",
        max_seq_length=2048, dtype="bfloat16", model=str(folder / "model"),
    ).save(folder)  # fmt: skip
    text = report.build_report(run, run / "report.html").read_text()
    assert "WaveCoder-DS-6.7B" in text
    assert html_table(text, "scores")[0]["paper tuned"] == "64.0"
    table = report.scores_rows({"rows": rows}, base_model="bigcode/starcoder")
    fix = next(r for r in table if r["benchmark"] == "humanevalpack-fix-python")
    assert (fix["paper_base"], fix["paper_tuned"]) == (8.7, 39.3)
    assert all(r["paper_tuned"] is None for r in report.scores_rows({"rows": rows}))


def test_ours_vs_paper_figure_draws_the_paper_row_only_for_its_model(tmp_path):
    from wavecoder.report import plots as report_plots
    from wavecoder.stages import REPORT

    rows = fake_rows(languages=("python",))
    with_paper = report.comparison({"rows": rows}, {"base_model": DEEPSEEK})
    bars = report_plots.bars_of(with_paper)
    labels = {b["series"] for b in bars}
    assert labels == {"ours, base", "ours, tuned", "paper, base", "paper, tuned"}
    humaneval = {b["series"]: b["pass@1 (%)"] for b in bars if b["benchmark"] == "humaneval"}
    row = next(r for r in with_paper["rows"] if r["benchmark"] == "humaneval")
    assert (
        humaneval["paper, tuned"] == row["paper_tuned"] and humaneval["ours, base"] == row["base"]
    )
    # another base model: ours only, never the paper's numbers beside them
    alone = report.comparison({"rows": rows}, {"base_model": "HuggingFaceTB/SmolLM2-135M"})
    assert {b["series"] for b in report_plots.bars_of(alone)} == {"ours, base", "ours, tuned"}

    run = write_run(tmp_path, rows, {"base_model": DEEPSEEK})
    figure = REPORT.path(run, "ours_vs_paper")
    figure.parent.mkdir(parents=True)
    fig = report_plots.ours_vs_paper(with_paper, figure)
    assert figure.read_bytes().startswith(b"\x89PNG")
    assert len(fig.axes[0].patches) >= len(bars)
    text = report.build_report(run, run / "report.html").read_text()
    assert text.count("data:image/png;base64,") == 1  # the figure, inlined in the scores part
