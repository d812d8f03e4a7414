"""Bad input through `implicit-rec`, in-process: exit status 2, one line naming the problem, nothing half-written.

Configuration and argument errors are refused before a run directory exists. Data errors come after
the data are read but before any training, and the run directory that the command created is removed
again. FM training is replaced by a sentinel, so an input that is wrongly accepted fails the test
fast instead of training a model.
"""

import json
import os

import numpy as np
import pytest

from implicit_rec import cli, config, pipeline
from implicit_rec.data import load_interactions

REAL_TRAIN_FM = pipeline.study.train_fm


class Accepted(Exception):
    """Raised where the FM would start training: the input got past every check."""


@pytest.fixture(autouse=True)
def no_training(monkeypatch):
    def refuse(table, fm, *args, **kwargs):
        raise Accepted(f"accepted {len(table)} events")

    monkeypatch.setattr(pipeline.study, "train_fm", refuse)


def cli_error(capsys, argv) -> str:
    """The one error line of ``implicit-rec argv``; fails unless it exits 2 with exactly one line."""
    code = cli.main([str(a) for a in argv] + ["--quiet"])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 2, (code, err)
    assert err.startswith("implicit-rec: error: "), err
    assert "\n" not in err and "Traceback" not in err, err
    return err


def log_rows(n=200, users=8, items=20, seed=0, label=None, start=0):
    rng = np.random.default_rng(seed)
    return [
        (
            f"u{rng.integers(users)}",
            f"i{rng.integers(items)}",
            start + t,
            int(rng.integers(2)) if label is None else label,
        )
        for t in range(n)
    ]


def write_csv(path, rows, header="user_id,item_id,timestamp,label"):
    path.write_text(header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


# -- configuration and arguments: refused before the run directory exists -----------------------

NO_OOF = ("--set", "fm.out_of_fold=0")
CONFIG_CASES = {
    # leakage guard (item 6)
    # (out-of-fold logging, on by default, makes an overlap sound: the overlap cases turn it off)
    "fm-vm-overlap-and-in-sample-log": (
        ["--set", "fm.days=[0,6]", "--set", "vm.days=[4,7]", "--set", "fm.log_from_day=2", *NO_OOF],
        ["fm.log_from_day=2", "fm.days=[0, 6]", "vm.days=[4, 7]", "days 4-5", "use fm.out_of_fold"],
    ),
    "in-sample-log-with-out-of-fold": (
        ["--set", "fm.days=[0,6]", "--set", "vm.days=[4,7]", "--set", "fm.log_from_day=2"],
        ["fm.log_from_day=2 is inside fm.days=[0, 6]", "set fm.log_from_day >= 6"],
    ),
    "fm-vm-overlap": (
        ["--set", "fm.days=[0,6]", *NO_OOF],
        ["fm.days=[0, 6]", "overlaps vm.days=[4, 7]", "fm.out_of_fold"],
    ),
    "vm-before-fm": (
        ["--set", "fm.days=[2,6]", "--set", "vm.days=[0,3]", *NO_OOF],
        ["overlaps vm.days=[0, 3]", "day 2"],
    ),
    "vm-before-fm-out-of-fold": (
        ["--set", "fm.days=[2,6]", "--set", "vm.days=[0,3]"],
        ["vm.days=[0, 3] (days 0-2) starts before the FM logs (day 2", "KD", "start vm.days at 2"],
    ),
    "log-from-inside-fm-window": (["--set", "fm.log_from_day=3"], ["fm.log_from_day=3", "inside fm.days=[0, 4]"]),
    "kd-rows-not-logged": (
        ["--set", "fm.log_from_day=5", *NO_OOF],
        ["vm.days=[4, 7]", "day 4", "KD", "fm.log_from_day"],
    ),
    # non-finite and out-of-range numbers (item 8, 10)
    "nan-learning-rate": (["--set", "fm.learning_rate=nan"], ["fm.learning_rate must be a finite number"]),
    "inf-learning-rate": (["--set", "vm.learning_rate=inf"], ["vm.learning_rate must be a finite number"]),
    "minus-inf-kd-weight": (["--set", "vm.kd_weight=-inf"], ["vm.kd_weight must be a finite number"]),
    "nan-lipschitz-scale": (["--set", "sweep.lipschitz_scale=nan"], ["sweep.lipschitz_scale must be a finite"]),
    "zero-learning-rate": (["--set", "vm.learning_rate=0"], ["vm.learning_rate must be > 0"]),
    "negative-learning-rate": (["--set", "fm.learning_rate=-1e-3"], ["fm.learning_rate must be > 0"]),
    "zero-lipschitz-scale": (["--set", "sweep.lipschitz_scale=0"], ["sweep.lipschitz_scale must be > 0"]),
    "zero-epochs": (["--set", "vm.epochs=0"], ["vm.epochs must be >= 1"]),
    "negative-batch": (["--set", "fm.batch_size=-1"], ["fm.batch_size must be >= 1"]),
    "zero-hidden-width": (["--set", "vm.hidden=[64, 0]"], ["vm.hidden[1] must be >= 1"]),
    "negative-day": (["--set", "fm.days=[-2,4]"], ["fm.days[0] must be >= 0"]),
    "empty-window": (["--set", "vm.days=[4,4]"], ["vm.days must be [start, end) with start < end"]),
    "three-day-window": (["--set", "fm.days=[0,2,4]"], ["fm.days must be [start, end)"]),
    "fractional-day": (["--set", "fm.days=[0.5,4]"], ["fm.days[0] must be an integer"]),
    "out-of-fold-one": (["--set", "fm.out_of_fold=1"], ["fm.out_of_fold=1", "K >= 2"]),
    # empty and repeated lists
    "empty-iterations": (["--set", "sweep.iterations=[]"], ["sweep.iterations must not be empty"]),
    "empty-archs": (["--set", "vm.archs=[]"], ["vm.archs must not be empty"]),
    "empty-hidden": (["--set", "vm.hidden=[]"], ["vm.hidden must list at least one hidden width"]),
    "repeated-arch": (["--set", 'vm.archs=["din","din"]'], ["vm.archs lists 'din' more than once"]),
    "repeated-transfer": (["--set", 'vm.transfers=["kd","none","kd"]'], ["vm.transfers lists 'kd'"]),
    "empty-baseline-depths": (["--set", "sweep.baseline_depths=[]"], ["sweep.baseline_depths must not be empty"]),
    "old-baselines-key": (
        ["--set", "sweep.baselines=[[32]]"],
        ["'sweep.baselines' was replaced by", "baseline_depths"],
    ),
    # wrong types
    "string-for-int": (["--set", 'vm.seeds="2"'], ["vm.seeds must be an integer"]),
    "bool-for-int": (["--set", "vm.seeds=true"], ["vm.seeds must be an integer"]),
    "int-for-bool": (["--set", "vm.kd_on_main=1"], ["vm.kd_on_main must be true or false"]),
    "scalar-for-list": (["--set", "vm.archs=3"], ["vm.archs must be a list"]),
    # --set syntax
    "set-without-value": (["--set", "vm.seeds"], ["expected section.key=value"]),
    "set-without-section": (["--set", "seeds=2"], ["the key must be section.key"]),
    "set-too-deep": (["--set", "a.b.c=1"], ["the key must be section.key"]),
    "set-empty-value": (["--set", "vm.seeds="], ["vm.seeds must be an integer"]),
    "set-unquoted-list": (["--set", "vm.archs=[din]"], ["is not a TOML value", "quote strings"]),
    "set-unknown-key": (["--set", "vm.seed=2"], ["did you mean 'vm.seeds'"]),
    "set-unknown-section": (["--set", "vmm.seeds=2"], ["unknown section [vmm]"]),
    # flags
    "unknown-preset": (["--preset", "huge"], ["data.preset='huge' is not valid"]),
    "zero-seeds": (["--seeds", "0"], ["vm.seeds must be >= 1"]),
    "negative-seeds": (["--seeds", "-1"], ["vm.seeds must be >= 1"]),
    "non-integer-seeds": (["--seeds", "two"], ["argument --seeds: invalid int value: 'two'"]),
    "unknown-flag": (["--sed", "1"], ["unrecognized arguments"]),
}


@pytest.mark.parametrize("args, needles", CONFIG_CASES.values(), ids=CONFIG_CASES.keys())
def test_config_errors_leave_no_run_directory(tmp_path, capsys, args, needles):
    out = tmp_path / "run"
    err = cli_error(capsys, ["run", "--out", out, "--preset", "tiny", *args])
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


@pytest.mark.parametrize(
    "content, needles",
    [
        ("[fm]\nlearning_rate = nan\n", ["line 2", "fm.learning_rate must be a finite number"]),
        ("[sweep]\niterations = []\n", ["sweep.iterations must not be empty"]),
        ('[vm]\nseeds = "2"\n', ["line 2", "vm.seeds must be an integer"]),
        ("[vm\nseeds = 2\n", ["not valid TOML", "line 1"]),
        ("seeds = 2\n", ["unknown section [seeds]", "did you mean 'sweep'"]),
        ("[fm]\ndays = [0, 6]\nout_of_fold = 0\n", ["fm.days=[0, 6]", "overlaps vm.days"]),
        ("# caf\xe9\n[vm]\nseeds = 2\n".encode("latin-1"), ["line 1, column 6", "byte 0xe9", "UTF-8"]),
        ("[vm]\nseeds = 2\n".encode("utf-16"), ["line 1, column 1", "UTF-16", "UTF-8"]),
    ],
    ids=["nan", "empty-list", "wrong-type", "bad-toml", "top-level-key", "leakage", "latin-1", "utf-16"],
)
def test_config_file_errors_name_file_and_line(tmp_path, capsys, content, needles):
    path = tmp_path / "c.toml"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "run"
    err = cli_error(capsys, ["run", "--config", path, "--out", out])
    assert str(path) in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


def test_config_file_is_checked_for_leakage_only_after_the_overrides(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[fm]\ndays = [0, 6]\n")
    cfg = config.load_config(path, ("vm.days=[6, 8]",))
    assert (cfg.fm.days, cfg.vm.days) == ((0, 6), (6, 8))


@pytest.mark.parametrize(
    "overrides",
    [
        (),
        ("fm.days=[0, 6]", "fm.out_of_fold=3"),
        ("fm.log_from_day=5", "vm.days=[5, 7]"),
        ("fm.log_from_day=5", 'vm.transfers=["none", "loopfm"]', 'sweep.baseline_transfer="loopfm"'),
    ],
    ids=["defaults", "overlap-logged-out-of-fold", "later-logging", "late-log-without-kd"],
)
def test_leakage_guard_accepts_sound_windows(overrides):
    assert config.leakage_problems(config.load_config(None, overrides)) == []


def test_leakage_guard_also_checks_a_config_built_in_python(tmp_path):
    cfg = config.DEFAULT.replace(fm=config.FMConfig(days=(0, 6), out_of_fold=0))
    with pytest.raises(pipeline.RunError, match=r"fm.days=\[0, 6\] \(days 0-5\) overlaps vm.days"):
        pipeline.run(tmp_path / "run", cfg, quiet=True)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["run", "--config", "{tmp}/missing.toml"], ["missing.toml does not exist"]),
        (["run", "--config", "{tmp}"], ["is a directory"]),
        (["run", "--out", "{tmp}/afile"], ["afile exists and is not a directory"]),
        (["config", "--set", "fm.learning_rate=nan"], ["fm.learning_rate must be a finite number"]),
        (["report", "--run", "{tmp}/afile"], ["afile is a file"]),
        (["report", "--run", "{tmp}/nope"], ["metrics.json does not exist"]),
        (["sweep", "--run", "{tmp}/nope"], ["not a run directory"]),
        (["frobnicate"], ["invalid choice: 'frobnicate'"]),
    ],
    ids=[
        "config-missing",
        "config-directory",
        "out-is-file",
        "config-command-nan",
        "report-file",
        "report-missing",
        "sweep-missing",
        "unknown-command",
    ],
)
def test_path_and_command_errors(tmp_path, capsys, argv, needles):
    (tmp_path / "afile").write_text("x")
    err = cli_error(capsys, [a.replace("{tmp}", str(tmp_path)) for a in argv])
    for needle in needles:
        assert needle in err, (needle, err)


# -- data: refused before training; the run directory the command created is removed ------------


def _latin1_row(path):
    rows = log_rows()
    text = "user_id,item_id,timestamp,label\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)
    lines = text.splitlines(keepends=True)
    lines[151] = "caf\xe9" + lines[151][lines[151].index(",") :]  # line 152, column user_id
    path.write_bytes("".join(lines).encode("latin-1"))
    return path


DATA_CASES = {
    "empty-file": (lambda p: (p.write_text(""), p)[1], ["line 1", "the file is empty"]),
    "header-only": (lambda p: write_csv(p, []), ["line 2", "header but no data rows"]),
    "missing-column": (
        lambda p: write_csv(p, [r[:3] for r in log_rows()], "user_id,item_id,timestamp"),
        ["line 1", "column 'label'", "lacks required column"],
    ),
    "semicolon-delimited": (lambda p: write_csv(p, [], "user_id;item_id;timestamp;label"), ["lacks required column"]),
    "text-label": (lambda p: write_csv(p, [r[:3] + ("yes",) for r in log_rows()]), ["line 2", "'yes' is not a number"]),
    "label-two": (lambda p: write_csv(p, log_rows()[:-1] + [("u1", "i1", 999, 2)]), ["line 201", "not 0 or 1"]),
    "empty-label": (lambda p: write_csv(p, log_rows()[:-1] + [("u1", "i1", 999, "")]), ["line 201", "empty value"]),
    "text-timestamp": (
        lambda p: write_csv(p, log_rows()[:-1] + [("u1", "i1", "noon", 1)]),
        ["line 201", "column 'timestamp'", "'noon'"],
    ),
    "negative-timestamp": (lambda p: write_csv(p, log_rows(start=-5)), ["line 2", "negative timestamp '-5'"]),
    "missing-user": (lambda p: write_csv(p, log_rows()[:-1] + [("", "i1", 999, 1)]), ["line 201", "column 'user_id'"]),
    "ragged-row": (
        lambda p: write_csv(p, log_rows()[:50] + [("u1", "i1", 50)] + log_rows()[51:]),
        ["line 52", "3 field(s), but the header has 4"],
    ),
    "extra-field": (
        lambda p: write_csv(p, log_rows()[:50] + [("u1", "i1", 50, 1, 9)] + log_rows()[51:]),
        ["line 52", "5 field(s)"],
    ),
    "blank-line": (lambda p: write_csv(p, log_rows()[:50] + [("",)] + log_rows()[51:]), ["line 52", "blank line"]),
    "three-rows": (lambda p: write_csv(p, log_rows(3)), ["3 rows are too few to split", "test split is empty"]),
    "one-row": (lambda p: write_csv(p, log_rows(1)), ["1 rows are too few to split"]),
    "one-timestamp": (
        lambda p: write_csv(p, [(u, i, 5, y) for u, i, _, y in log_rows()]),
        ["too few to split", "train"],
    ),
    "all-labels-0": (lambda p: write_csv(p, log_rows(label=0)), ["column 'label'", "labels is 0", "AUC"]),
    "all-labels-1": (lambda p: write_csv(p, log_rows(label=1)), ["column 'label'", "labels is 1", "AUC"]),
    "one-user": (lambda p: write_csv(p, log_rows(users=1)), ["column 'user_id'", "same user ('u0')"]),
    "latin-1": (_latin1_row, ["line 152", "column 'user_id'", "byte 0xe9", "UTF-8"]),
    "latin-1-header": (
        lambda p: (p.write_bytes("us\xe9r_id,item_id,timestamp,label\nu,i,1,1\n".encode("latin-1")), p)[1],
        ["line 1", "byte 0xe9", "UTF-8"],
    ),
    "utf-16": (
        lambda p: (p.write_bytes(write_csv(p, log_rows()).read_text().encode("utf-16")), p)[1],
        ["line 1", "UTF-16", "UTF-8"],
    ),
    "garbage-parquet": (
        lambda p: (p.with_suffix(".parquet").write_text("not parquet"), p.with_suffix(".parquet"))[1],
        ["unreadable parquet file"],
    ),
}


@pytest.mark.parametrize("make, needles", DATA_CASES.values(), ids=DATA_CASES.keys())
def test_bad_interaction_logs_name_file_and_line(tmp_path, capsys, make, needles):
    path = make(tmp_path / "log.csv")
    out = tmp_path / "run"
    err = cli_error(capsys, ["run", "--dataset", f"interactions:{path}", "--out", out])
    assert str(path) in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists(), "a refused run left its directory behind"


DATASET_CASES = {
    "typo-in-source": ("interactoins:{tmp}/log.csv", ["--dataset interactoins:", "did you mean 'interactions'"]),
    "unknown-source": ("foo:bar", ["data.dataset='foo:bar': unknown source 'foo'", "valid: synthetic, taobaoad"]),
    "empty": ("", ["unknown source ''"]),
    "no-path": ("interactions", ["data.source='interactions' needs a path"]),
    "synthetic-with-path": ("synthetic:x", ["data.source='synthetic' takes no path"]),
    "missing-file": ("interactions:{tmp}/nope.csv", ["nope.csv does not exist", "reads an interaction log"]),
    "directory-for-file": ("interactions:{tmp}", ["is a directory", "reads an interaction log"]),
    "file-for-directory": ("taobaoad:{tmp}/afile", ["afile is a file", "reads a directory"]),
    "empty-directory": ("kuaivideo:{tmp}", ["has no train.csv and no test.csv"]),
    "half-a-release": ("amazonelectronics:{tmp}/half", ["has no test.csv;", "holding train.csv and test.csv"]),
}


@pytest.mark.parametrize("spec, needles", DATASET_CASES.values(), ids=DATASET_CASES.keys())
def test_bad_dataset_entries_are_refused_before_the_run_directory_exists(tmp_path, capsys, spec, needles):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "train.csv").write_text("x")
    out = tmp_path / "run"
    err = cli_error(capsys, ["run", "--dataset", spec.replace("{tmp}", str(tmp_path)), "--out", out])
    assert "--dataset" in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


def test_dataset_typo_then_the_corrected_command_runs(tmp_path, capsys):
    """The issue's case: a typo leaves no run directory behind that would refuse the fixed command."""
    log = write_csv(tmp_path / "log.csv", log_rows())
    out = tmp_path / "runs" / "a"
    err = cli_error(capsys, ["run", "--dataset", f"interactoins:{log}", "--out", out])
    assert "did you mean 'interactions'" in err and "data.dataset" in err
    assert not out.exists() and not out.parent.exists()
    with pytest.raises(Accepted):
        cli.main(["run", "--dataset", f"interactions:{log}", "--out", str(out), "--quiet"])


def test_unreadable_log_is_refused_before_the_run_directory_exists(tmp_path, capsys):
    log = write_csv(tmp_path / "log.csv", log_rows())
    log.chmod(0)
    try:
        if os.access(log, os.R_OK):
            pytest.skip("running as a user who reads any file (root)")
        err = cli_error(capsys, ["run", "--dataset", f"interactions:{log}", "--out", tmp_path / "run"])
    finally:
        log.chmod(0o644)
    assert "log.csv is not readable" in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "content, needles",
    [
        ('[data]\ndataset = "interactoins:{log}"\n', ["line 2", "did you mean 'interactions'"]),
        ('[data]\nsource = "interaction"\npath = "{log}"\n', ["line 2", "did you mean 'interactions'"]),
        ('[data]\ndataset = "interactions:{log}"\nsource = "interactions"\n', ["shorthand", "not both"]),
        ('[data]\nsource = "interactions"\n', ["needs a path"]),
        ('[data]\ndataset = "interactions:{log}"\n[data.options]\nuser_column = "u"\n', ["line 4", "did you mean"]),
        ('[data.options]\nuser_col = "u"\n', ["line 2", "data.options.user_col does not apply", "'synthetic'"]),
        (
            '[data]\ndataset = "taobaoad:{dir}"\n[data.options]\nrating_threshold = 4\n',
            ["line 4", "data.options.rating_threshold does not apply to data.source='taobaoad'"],
        ),
        ('[data]\ndataset = "interactions:{log}"\n[data.options]\nmax_len = 0\n', ["line 4", "max_len must be >= 1"]),
        ('[data]\ndataset = "interactions:{log}"\n[data.options]\nhistory = "pos"\n', ["'positive'"]),
        ('[data]\ndataset = "interactions:{log}"\noptions = 3\n', ["[data.options] must be a table"]),
        ('[data]\ndataset = "interactions:{dir}"\n', ["line 2", "is a directory"]),
    ],
    ids=[
        "shorthand-typo",
        "source-typo",
        "shorthand-and-source",
        "no-path",
        "unknown-option",
        "option-for-synthetic",
        "option-for-another-source",
        "option-out-of-range",
        "option-choice",
        "options-not-a-table",
        "directory-for-file",
    ],
)
def test_dataset_entries_in_a_file_name_the_line(tmp_path, capsys, content, needles):
    log = write_csv(tmp_path / "log.csv", log_rows())
    path = tmp_path / "c.toml"
    path.write_text(content.replace("{log}", str(log)).replace("{dir}", str(tmp_path)))
    out = tmp_path / "run"
    err = cli_error(capsys, ["run", "--config", path, "--out", out])
    assert str(path) in err
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


def _late_second_user():
    """u0 throughout, u1 only in the test split: every FM-window event is in u0's fold."""
    return [("u0" if t < 180 else "u1", i, t, y) for _, i, t, y in log_rows()]


@pytest.mark.parametrize(
    "rows, overrides, needles",
    [
        (log_rows, ["vm.days=[20,30]"], ["vm.days=[20, 30] holds no training events", "days 0-7"]),
        (log_rows, ["fm.days=[30,40]", "vm.days=[40,50]"], ["fm.days=[30, 40] holds 0 training events"]),
        (
            log_rows,
            [
                "fm.log_from_day=100",
                "fm.out_of_fold=0",
                'vm.transfers=["none","loopfm"]',
                'sweep.baseline_transfer="loopfm"',
            ],
            ["fm.log_from_day=100", "logs no events"],
        ),
        (
            log_rows,
            ["fm.log_from_day=100", "fm.out_of_fold=0", 'vm.transfers=["none"]', 'sweep.baseline_transfer="none"'],
            ["fm.log_from_day=100", "logs no events"],
        ),
        (_late_second_user, ["fm.out_of_fold=2"], ["fm.out_of_fold=2", "fold 0", "no training events"]),
        (log_rows, ['data.cache_dir="{log}"'], ["data.cache_dir=", "is a file"]),
        (
            lambda: [r[:3] + (0 if r[2] >= 180 else r[3],) for r in log_rows()],
            [],
            ["test split of data.dataset has only label 0 in 20 events", "AUC"],
        ),
        (
            lambda: [r[:3] + (1 if 160 <= r[2] < 180 else r[3],) for r in log_rows()],
            [],
            ["validation split of data.dataset has only label 1 in 20 events"],
        ),
    ],
    ids=[
        "vm-window-empty",
        "fm-window-empty",
        "nothing-logged",
        "nothing-logged-no-transfer",
        "one-fold-holds-the-fm-window",
        "cache-dir-is-file",
        "test-split-one-label",
        "valid-split-one-label",
    ],
)
def test_windows_that_do_not_fit_the_data(tmp_path, capsys, rows, overrides, needles):
    log = write_csv(tmp_path / "log.csv", rows())
    out = tmp_path / "run"
    args = sum((["--set", o.replace("{log}", str(log))] for o in overrides), [])
    err = cli_error(capsys, ["run", "--dataset", f"interactions:{log}", "--out", out, *args])
    for needle in needles:
        assert needle in err, (needle, err)
    assert not out.exists()


def test_more_folds_than_users_is_not_an_error(tmp_path):
    """Empty folds have nothing to log (build_store skips them)."""
    log = write_csv(tmp_path / "log.csv", log_rows(users=3))
    with pytest.raises(Accepted):
        cli.main(
            [
                "run",
                "--dataset",
                f"interactions:{log}",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
                "--set",
                "fm.out_of_fold=5",
            ]
        )


def test_good_log_reaches_training(tmp_path):
    """The sentinel is reached by sound input: the cases above fail for their reason, not any."""
    log = write_csv(tmp_path / "log.csv", log_rows())
    with pytest.raises(Accepted):
        cli.main(["run", "--dataset", f"interactions:{log}", "--out", str(tmp_path / "run"), "--quiet"])


def test_tilde_in_dataset_path_is_the_home_directory(tmp_path, monkeypatch):
    """`--dataset interactions:~/log.csv`: the shell leaves '~' after 'interactions:' alone."""
    monkeypatch.setenv("HOME", str(tmp_path))
    write_csv(tmp_path / "log.csv", log_rows())
    with pytest.raises(Accepted):
        cli.main(["run", "--dataset", "interactions:~/log.csv", "--out", str(tmp_path / "run"), "--quiet"])


# -- duplicates: kept, counted, reported ---------------------------------------------------------


def test_exact_duplicates_are_kept_counted_logged_and_recorded(tmp_path):
    rows = log_rows()
    log = write_csv(tmp_path / "log.csv", rows + rows[:7] + rows[3:5])  # 9 extra copies
    table = load_interactions(log)
    assert len(table) == len(rows) + 9 and table.info["duplicate_events"] == 9
    assert load_interactions(write_csv(tmp_path / "plain.csv", rows)).info["duplicate_events"] == 0
    # same user, item and time with another label is not an exact duplicate
    conflict = rows + [rows[0][:3] + (1 - rows[0][3],)]
    assert load_interactions(write_csv(tmp_path / "c.csv", conflict)).info["duplicate_events"] == 0
    out = tmp_path / "run"
    with pytest.raises(Accepted):
        cli.main(["run", "--dataset", f"interactions:{log}", "--out", str(out), "--quiet"])
    assert "9 exact duplicate events (kept)" in (out / "log.txt").read_text()
    assert json.loads((out / "run.json").read_text())["data"]["duplicate_events"] == 9


# -- a damaged run directory: say what is wrong and how to recover -------------------------------


def _started_run(tmp_path):
    """A run directory as a run interrupted after the data stage leaves it."""
    log = write_csv(tmp_path / "log.csv", log_rows())
    out = tmp_path / "run"
    argv = ["run", "--dataset", f"interactions:{log}", "--out", str(out), "--quiet"]
    with pytest.raises(Accepted):
        cli.main(argv)
    return out, argv


@pytest.mark.parametrize(
    "content, needles",
    [
        ('{"status": "running", "stages": {', ["run.json in", "is not valid JSON (line 1 column 34"]),
        ("", ["run.json in", "is not valid JSON (line 1 column 1"]),
        ("[1, 2]", ["run.json in", "holds a JSON list"]),
        ('{"status": "running"}', ["run.json in", "lacks its 'status' or 'stages'"]),
        (b"\xff\xfe{}", ["run.json in", "not UTF-8"]),
    ],
    ids=["truncated", "empty", "list", "no-stages", "binary"],
)
def test_damaged_run_json_says_how_to_recover(tmp_path, capsys, content, needles):
    out, argv = _started_run(tmp_path)
    path = out / "run.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    err = cli_error(capsys, argv[:-1])
    for needle in needles + [f"remove {out}", "--force"]:
        assert needle in err, (needle, err)
    assert out.is_dir(), "an existing run directory is never removed without --force"
    with pytest.raises(Accepted):  # the advice works
        cli.main(argv + ["--force"])
    assert json.loads(path.read_text())["status"] == "running"


def test_damaged_config_toml_in_run_directory(tmp_path, capsys):
    out, argv = _started_run(tmp_path)
    (out / "config.toml").write_text("[vm\n")
    err = cli_error(capsys, argv[:-1])
    assert "config.toml is damaged" in err and "--force" in err
    err = cli_error(capsys, ["sweep", "--run", out])
    assert "config.toml is damaged" in err


def test_damaged_result_file_says_how_to_recover(tmp_path, capsys, monkeypatch):
    out, argv = _started_run(tmp_path)
    (out / "models").mkdir()
    (out / "models" / "fm.json").write_text("{oops")
    monkeypatch.setattr(pipeline.study, "train_fm", REAL_TRAIN_FM)  # reads fm.json before any training
    err = cli_error(capsys, argv[:-1])
    assert "fm.json in" in err and "is not valid JSON (line 1 column 2" in err
    assert f"remove {out}" in err and "--force" in err


@pytest.mark.slow  # builds the FM (JAX start-up and parameter init: tens of seconds on a busy CPU)
def test_damaged_weights_file_says_how_to_recover(tmp_path, capsys, monkeypatch):
    out, argv = _started_run(tmp_path)
    (out / "models").mkdir()
    fm = dict(auc=0.7, gauc=0.7, logloss=0.4, params=1, size="small", seconds=1.0, examples_per_second=1.0)
    (out / "models" / "fm.json").write_text(json.dumps(fm))  # a finished FM stage ...
    (out / "models" / "fm.msgpack").write_bytes(b"\x00garbage")  # ... whose weights are damaged
    monkeypatch.setattr(pipeline.study, "train_fm", REAL_TRAIN_FM)
    err = cli_error(capsys, argv[:-1])
    assert "cannot restore fm.msgpack" in err and f"remove {out}" in err and "--force" in err


def test_damaged_metrics_json_for_report(tmp_path, capsys):
    (tmp_path / "metrics.json").write_text('{"fm": ')
    err = cli_error(capsys, ["report", "--run", tmp_path])
    assert "metrics.json: not valid JSON (line 1, column 8)" in err
