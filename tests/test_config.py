"""The configuration: one definition per key, the typed dataset entry, sections validated however they
are built, the generated reference page, the shared argument helpers."""

import argparse
import inspect
import re
from pathlib import Path

import numpy as np
import pytest

from implicit_rec import cli, config
from implicit_rec.data import LOADERS, load_data, load_interactions

DOCS = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def ratings_csv(path, n=200, users=9, items=15, seed=0):
    """A log with its own column names: uid, movie, ts, stars (1-5), genre."""
    rng = np.random.default_rng(seed)
    stars = rng.integers(1, 6, n)
    rows = [f"u{rng.integers(users)},m{rng.integers(items)},{10 * t},{stars[t]},g{t % 3}" for t in range(n)]
    path.write_text("uid,movie,ts,stars,genre\n" + "\n".join(rows) + "\n")
    return path, stars


RATINGS_OPTIONS = """
[data.options]
user_col = "uid"
item_col = "movie"
time_col = "ts"
rating_col = "stars"
rating_threshold = 4
item_categorical = ["genre"]
max_len = 7
"""


# -- the typed dataset entry ---------------------------------------------------------------------


def test_loader_options_from_toml_reach_the_loader(tmp_path):
    log, stars = ratings_csv(tmp_path / "ratings.csv")
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\ndataset = "interactions:{log}"\n' + RATINGS_OPTIONS)
    cfg = config.load_config(path)
    assert (cfg.data.source, cfg.data.path) == ("interactions", str(log))
    assert cfg.data.options.rating_threshold == 4.0 and cfg.data.options.item_categorical == ("genre",)
    table = load_data(cfg.data)
    assert table.schema.categorical == ("uid", "movie", "genre")
    assert dict(table.schema.sequences) == {"movie_his": "movie", "genre_his": "genre"}
    assert table["movie_his"].shape == (200, 7)
    np.testing.assert_array_equal(table["label"], (stars >= 4).astype(np.float32))  # ts increasing: row order
    direct = load_interactions(
        log,
        user_col="uid",
        item_col="movie",
        time_col="ts",
        rating_col="stars",
        rating_threshold=4,
        item_categorical=("genre",),
        max_len=7,
    )
    for column in direct.columns:
        np.testing.assert_array_equal(table[column], direct[column])


def test_loader_options_from_set_and_the_cache(tmp_path):
    log, stars = ratings_csv(tmp_path / "ratings.csv")
    sets = [
        "data.options.user_col=uid",
        "data.options.item_col=movie",
        "data.options.time_col=ts",
        "data.options.rating_col=stars",
    ]
    cfg = config.load_config(None, (f"data.dataset=interactions:{log}", *sets, "data.options.rating_threshold=5"))
    first = load_data(cfg.data, default_cache_dir=tmp_path / "cache")
    assert first["label"].sum() == (stars >= 5).sum()
    again = load_data(cfg.data, default_cache_dir=tmp_path / "cache")
    assert isinstance(again["label"], np.memmap) and len(list((tmp_path / "cache").iterdir())) == 1
    lower = config.load_config(None, (f"data.dataset=interactions:{log}", *sets, "data.options.rating_threshold=2"))
    assert load_data(lower.data, default_cache_dir=tmp_path / "cache")["label"].sum() == (stars >= 2).sum()
    assert len(list((tmp_path / "cache").iterdir())) == 2  # another option, another cache entry
    explicit = config.load_config(
        None,
        (f"data.dataset=interactions:{log}", *sets, "data.options.rating_threshold=2", f"data.cache_dir={tmp_path}/c2"),
    )
    load_data(explicit.data, default_cache_dir=tmp_path / "cache")  # an explicit data.cache_dir wins
    assert len(list((tmp_path / "c2").iterdir())) == 1


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ("data.options.user_column=uid",),
            "unknown key 'data.options.user_column'; did you mean 'data.options.user_col'",
        ),
        (("data.options.user_col=uid",), "data.options.user_col does not apply to data.source='synthetic'"),
        (("data.dataset=taobaoad:{tmp}", "data.options.history=all"), "data.options.history does not apply to"),
        (("data.dataset=kuaivideo:{tmp}", "data.options.visual_embeddings=1"), "must be true or false"),
        (("data.options.min_count={item_id = 0}",), "data.options.min_count.item_id must be >= 1"),
        (("data.options.test_fraction=1.0",), "data.options.test_fraction must be < 1"),
        (("data.source=interaction",), "did you mean 'interactions'"),
        (("data.dataset=interactoins:x.csv",), "--set data.dataset=interactoins:x.csv: data.dataset="),
        (("data.dataset=interactions",), "data.source='interactions' needs a path"),
        (("data.dataset=synthetic:x",), "data.source='synthetic' takes no path"),
        (("data.opts.user_col=uid",), "the key must be section.key"),
    ],
)
def test_bad_dataset_entries(tmp_path, overrides, message):
    with pytest.raises(config.ConfigError, match=None) as err:
        config.load_config(None, tuple(o.replace("{tmp}", str(tmp_path)) for o in overrides))
    assert message in str(err.value)


def test_the_last_dataset_entry_wins(tmp_path):
    log, _ = ratings_csv(tmp_path / "ratings.csv")
    path = tmp_path / "c.toml"
    path.write_text(f'[data]\nsource = "interactions"\npath = "{log}"\npreset = "large"\n')
    args = argparse.Namespace(config=str(path), overrides=["data.preset=default"], dataset="synthetic", preset="tiny")
    cfg = config.config_from_args(args, {"dataset": "data.dataset", "preset": "data.preset"})
    assert (cfg.data.source, cfg.data.path, cfg.data.preset) == ("synthetic", "", "tiny")  # flags over --set over file
    cfg = config.load_config(path, (f"data.dataset=taobaoad_X1:{tmp_path}",))
    assert (cfg.data.source, cfg.data.path) == ("taobaoad", str(tmp_path))
    assert cfg.data.dataset == f"taobaoad:{tmp_path}"
    with pytest.raises(config.ConfigError, match=r"--dataset interactoins:x: data.dataset=.*did you mean"):
        config.config_from_args(
            argparse.Namespace(config=None, overrides=[], dataset="interactoins:x"), {"dataset": "data.dataset"}
        )


def test_paths_are_checked_by_check_data_and_load_data(tmp_path):
    log, _ = ratings_csv(tmp_path / "ratings.csv")
    config.check_data(config.DataConfig(source="interactions", path=str(log)))  # sound: no error
    cases = [
        (config.DataConfig(source="interactions", path=str(tmp_path / "nope.csv")), "nope.csv does not exist"),
        (config.DataConfig(source="interactions", path=str(tmp_path)), "is a directory"),
        (config.DataConfig(source="amazonelectronics", path=str(log)), "ratings.csv is a file"),
        (config.DataConfig(source="taobaoad", path=str(tmp_path)), "has no train.csv and no test.csv"),
        (config.DataConfig(cache_dir=str(log)), "data.cache_dir="),
    ]
    for data, message in cases:
        with pytest.raises(config.ConfigError, match=message):
            config.check_data(data)
        with pytest.raises(config.ConfigError, match=message):
            load_data(data)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "train.csv").write_text("x")
    (tmp_path / "d" / "test.csv").write_text("x")
    config.check_data(config.DataConfig(source="kuaivideo", path=str(tmp_path / "d")))


def test_loader_options_are_every_loader_keyword():
    """Each loader option is settable, and applies exactly to the sources whose loader takes it."""
    assert set(config.SOURCES) == {"synthetic", *LOADERS}
    taken = {
        name
        for loader in LOADERS.values()
        for name, p in inspect.signature(loader).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    fields = config.LoaderOptions.__dataclass_fields__
    assert set(fields) == taken
    for name, field in fields.items():
        takes = {s for s, loader in LOADERS.items() if name in inspect.signature(loader).parameters}
        assert set(field.metadata["sources"]) == takes, name


# -- sections built in Python are validated too ---------------------------------------------------


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: config.VMConfig(epochs=0), "vm.epochs must be >= 1"),
        (lambda: config.VMConfig(archs=("mlp", "cnn")), r"vm.archs\[1\]='cnn' is not valid"),
        (lambda: config.VMConfig(method="andersen"), "did you mean 'anderson'"),
        (lambda: config.VMConfig(learning_rate=float("nan")), "vm.learning_rate must be a finite number"),
        (lambda: config.FMConfig(days=(4, 2)), r"fm.days must be \[start, end\)"),
        (lambda: config.SweepConfig(iterations=(4, 2)), "increasing"),
        (lambda: config.DSGDConfig(agents=2, eval_agent=2), "dsgd.eval_agent must be < dsgd.agents=2"),
        (lambda: config.DataConfig(source="interactoins", path="x"), "did you mean 'interactions'"),
        (lambda: config.DataConfig(options=config.LoaderOptions(max_len=5)), "max_len does not apply"),
        (lambda: config.DataConfig(options={"max_len": 0}), "data.options.max_len must be >= 1"),
        (lambda: config.LoaderOptions(min_count={"item_id": 0}), "min_count.item_id must be >= 1"),
        (lambda: config.RunConfig(vm=config.FMConfig()), "RunConfig.vm must be a VMConfig"),
    ],
)
def test_sections_built_in_python_are_validated(build, message):
    with pytest.raises(config.ConfigError, match=message):
        build()


def test_sections_built_in_python_are_coerced_like_toml():
    vm = config.VMConfig(archs=["mlp"], hidden=[8], learning_rate=1)
    assert vm.archs == ("mlp",) and vm.hidden == (8,) and isinstance(vm.learning_rate, float)
    data = config.DataConfig(source="interactions", path="x.csv", options={"categorical": ["c"], "min_count": 2})
    assert data.options == config.LoaderOptions(categorical=("c",), min_count=2)
    assert data.options.given() == {"categorical": ("c",), "min_count": 2}
    assert config.load_config(None, ("data.dataset=interactions:x.csv", "data.options.min_count=2")).data.options == (
        config.LoaderOptions(min_count=2)
    )


# -- renamed keys -----------------------------------------------------------------------------------


def test_renamed_keys_say_the_new_name(tmp_path, capsys):
    for old, new in config.RENAMED.items():
        with pytest.raises(config.ConfigError, match=f"'{old}' was renamed; did you mean '{new}'"):
            config.load_config(None, (f"{old}=3",))
    path = tmp_path / "old.toml"
    path.write_text("[vm]\nseeds = 1\nimplicit_eval_iters = 12\n")
    with pytest.raises(config.ConfigError, match="line 3: 'vm.implicit_eval_iters' was renamed; did you mean"):
        config.load_config(path)
    # the config.toml of a run directory written before the rename
    run = tmp_path / "run"
    (run / "models").mkdir(parents=True)
    (run / "config.toml").write_text(config.to_toml(config.DEFAULT).replace("method =", "implicit_method ="))
    assert cli.main(["sweep", "--run", str(run), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "'vm.implicit_method' was renamed; did you mean 'vm.method'" in err and "\n" not in err.strip()


# -- TOML round trip, the reference page, the argument helpers ---------------------------------------


def test_new_keys_round_trip_through_toml(tmp_path):
    log, _ = ratings_csv(tmp_path / "ratings.csv")
    cfg = config.load_config(
        None,
        (
            f"data.dataset=interactions:{log}",
            "data.options.user_col=uid",
            'data.options.categorical=["genre"]',
            "data.options.min_count={uid = 2, movie = 3}",
            "data.options.rating_threshold=3.5",
            "data.options.visual_embeddings=auto",
            "vm.seeds=2",
        ),
    )
    assert cfg.data.options.min_count == {"uid": 2, "movie": 3} and cfg.data.options.visual_embeddings is None
    for comments in (True, False):
        path = tmp_path / f"c{comments}.toml"
        path.write_text(config.to_toml(cfg, comments=comments))
        assert config.load_config(path) == cfg
    assert config.from_dict(cfg.to_dict()) == cfg
    assert config.load_config(None) == config.DEFAULT


def test_docs_reference_is_generated_from_the_config():
    assert DOCS.read_text() == config.markdown_reference(), (
        f"docs/configuration.md is out of date: run `{config.REGENERATE}`"
    )
    text = config.markdown_reference()
    tables = {**config.SECTIONS, "data.options": config.LoaderOptions}
    for name, cls in tables.items():
        assert f"## [{name}]" in text
        for field in cls.__dataclass_fields__:
            assert f"| `{field}` |" in text or f"{name}.{field}" in tables, (name, field)
    for field in config.LoaderOptions.__dataclass_fields__:
        assert f"| `{field}` | auto (" in text
    assert "| `min_count` | auto (taobaoad: `10`; kuaivideo: `10`; amazonelectronics: `1`; interactions: `1`)" in text
    for term in config.GLOSSARY:
        assert f"| `{term}` |" in text


def test_docs_toml_example_loads_the_data(tmp_path, monkeypatch):
    (block,) = re.findall(r"```toml\n(.*?)```", DOCS.read_text(), flags=re.S)
    monkeypatch.chdir(tmp_path)
    _, stars = ratings_csv(tmp_path / "ratings.csv")
    (tmp_path / "example.toml").write_text(block)
    cfg = config.load_config("example.toml")
    np.testing.assert_array_equal(load_data(cfg.data)["label"], (stars >= 4).astype(np.float32))


def test_config_command_prints_the_reference_and_the_toml(tmp_path, capsys):
    assert cli.main(["config", "--markdown"]) == 0
    assert capsys.readouterr().out == config.markdown_reference()
    assert cli.main(["config", "--markdown", "--seeds", "2"]) == 2
    assert "--markdown documents the defaults; drop --seeds" in capsys.readouterr().err
    log, _ = ratings_csv(tmp_path / "ratings.csv")
    assert cli.main(["config", "--dataset", f"interactions:{log}", "--set", "data.options.user_col=uid"]) == 0
    path = tmp_path / "printed.toml"
    path.write_text(capsys.readouterr().out)
    cfg = config.load_config(path)
    assert (cfg.data.source, cfg.data.path, cfg.data.options.user_col) == ("interactions", str(log), "uid")
    assert "[data.options]" in path.read_text() and all(f"[{s}]" in path.read_text() for s in config.SECTIONS)


def test_add_config_args_and_config_from_args_serve_any_parser(tmp_path):
    parser = argparse.ArgumentParser()
    config.add_config_args(parser)
    parser.add_argument("--steps", type=int)
    path = tmp_path / "c.toml"
    path.write_text("[dsgd]\nsteps = 50\nagents = 2\n")
    args = parser.parse_args(["--config", str(path), "--set", "dsgd.steps=60", "--set", "dsgd.seed=3"])
    cfg = config.config_from_args(args, {"steps": "dsgd.steps"})
    assert (cfg.dsgd.agents, cfg.dsgd.steps, cfg.dsgd.seed) == (2, 60, 3)
    args = parser.parse_args(["--config", str(path), "--set", "dsgd.steps=60", "--steps", "70"])
    assert config.config_from_args(args, {"steps": "dsgd.steps"}).dsgd.steps == 70
    with pytest.raises(config.ConfigError, match="--steps 0: dsgd.steps must be >= 1"):
        config.config_from_args(parser.parse_args(["--steps", "0"]), {"steps": "dsgd.steps"})
