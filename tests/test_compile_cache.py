"""implicit_rec.compile_cache and ``--no-compile-cache``: where the persistent compilation cache
lives, what turns it off, that an unusable one is a warning, and that a second process reads it.

Every test uses tmp directories; the JAX settings it changes in this process are restored after it
(no compilation happens in between, so the test suite's own cache is never switched).
"""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import pytest

from implicit_rec import cli, compile_cache
from implicit_rec.compile_cache import ENV, CompileCacheWarning

ROOT = Path(__file__).resolve().parents[1]
JAX_VARS = ("JAX_COMPILATION_CACHE_DIR", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "JAX_COMPILATION_CACHE_MAX_SIZE")
KEYS = (
    "jax_compilation_cache_dir",
    "jax_persistent_cache_min_compile_time_secs",
    "jax_compilation_cache_max_size",
    "jax_enable_compilation_cache",
)


@pytest.fixture
def jax_cache_config(monkeypatch):
    """No cache directory set in JAX or the environment (as for a user); the settings restored after."""
    saved = {key: getattr(jax.config, key) for key in KEYS}
    for var in (*JAX_VARS, ENV):
        monkeypatch.delenv(var, raising=False)
    jax.config.update("jax_compilation_cache_dir", None)
    yield
    for key, value in saved.items():
        jax.config.update(key, value)


# ---- the directory -------------------------------------------------------------------------------


def test_cache_dir_resolution(tmp_path):
    home = str(tmp_path / "home")
    assert compile_cache.cache_dir({"HOME": home}) == Path(home) / ".cache" / "implicit-rec" / "jax"
    xdg = {"HOME": home, "XDG_CACHE_HOME": str(tmp_path / "xdg")}
    assert compile_cache.cache_dir(xdg) == tmp_path / "xdg" / "implicit-rec" / "jax"
    # the XDG spec ignores a relative XDG_CACHE_HOME; an empty one is unset
    for value in ("relative/xdg", ""):
        assert (
            compile_cache.cache_dir({"HOME": home, "XDG_CACHE_HOME": value})
            == Path(home) / ".cache" / "implicit-rec" / "jax"
        )
    # $IMPLICIT_REC_JAX_CACHE wins over XDG; ~ is expanded, a relative path made absolute
    assert compile_cache.cache_dir({**xdg, ENV: str(tmp_path / "mine")}) == tmp_path / "mine"
    assert compile_cache.cache_dir({**xdg, ENV: "~/c"}) == Path("~/c").expanduser()
    assert compile_cache.cache_dir({**xdg, ENV: "rel"}) == Path.cwd() / "rel"
    for off in ("off", "OFF", " off "):
        assert compile_cache.cache_dir({**xdg, ENV: off}) is None


def test_enable_sets_the_cache_without_a_size_limit_of_jaxs(tmp_path, jax_cache_config):
    path = tmp_path / "a" / "jax"
    assert compile_cache.enable({ENV: "off"}) is None and not jax.config.jax_enable_compilation_cache
    # an earlier `off` in the same process (an in-process command, a test) does not stick
    assert compile_cache.enable({ENV: str(path)}) == str(path)
    assert path.is_dir() and (path.stat().st_mode & 0o777) == 0o700
    assert jax.config.jax_compilation_cache_dir == str(path)
    assert jax.config.jax_persistent_cache_min_compile_time_secs == compile_cache.MIN_COMPILE_TIME_S
    assert jax.config.jax_compilation_cache_max_size == -1  # no lock, no scan of the directory at each write
    assert jax.config.jax_enable_compilation_cache


def test_enable_keeps_the_users_jax_settings(tmp_path, jax_cache_config):
    # JAX read these variables at import; enable leaves what they set alone
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 7.0)
    jax.config.update("jax_compilation_cache_max_size", 123)
    env = {
        ENV: str(tmp_path / "ours"),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "7",
        "JAX_COMPILATION_CACHE_MAX_SIZE": "123",
    }
    assert compile_cache.enable(env) == str(tmp_path / "ours")
    assert jax.config.jax_persistent_cache_min_compile_time_secs == 7.0
    assert jax.config.jax_compilation_cache_max_size == 123


def test_a_users_jax_compilation_cache_dir_wins(tmp_path, jax_cache_config):
    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    jax.config.update("jax_compilation_cache_max_size", 123)
    assert compile_cache.enable({ENV: str(ours), "JAX_COMPILATION_CACHE_DIR": str(theirs)}) == str(theirs)
    assert jax.config.jax_compilation_cache_dir is None  # JAX's own setting, not rewritten
    assert jax.config.jax_compilation_cache_max_size == 123 and not ours.exists()
    # set in this process (jax.config.update) before the command starts: kept as well
    jax.config.update("jax_compilation_cache_dir", str(theirs))
    assert compile_cache.enable({ENV: str(ours)}) == str(theirs)
    assert jax.config.jax_compilation_cache_dir == str(theirs) and not ours.exists()


def test_off_disables_even_a_users_jax_cache(tmp_path, jax_cache_config):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "theirs"))
    assert compile_cache.enable({ENV: "off", "HOME": str(tmp_path)}) is None
    assert not jax.config.jax_enable_compilation_cache
    assert not (tmp_path / ".cache").exists()


def test_unwritable_directory_warns_and_runs_without(tmp_path, jax_cache_config):
    (tmp_path / "file").write_text("not a directory")
    path = tmp_path / "file" / "jax"  # mkdir fails, also as root
    with pytest.warns(CompileCacheWarning) as caught:
        assert compile_cache.enable({ENV: str(path)}) is None
    message = str(caught[0].message)
    assert str(path) in message and ENV in message and "off" in message
    assert jax.config.jax_compilation_cache_dir is None


def _entries(directory: Path, ages_s: dict[str, float], size: int = 100) -> None:
    """Cache entries (<key>-cache with its <key>-atime file) last used ``ages_s[key]`` seconds ago."""
    now = time.time()
    for key, age in ages_s.items():
        for suffix in (compile_cache.ENTRY_SUFFIX, compile_cache.ATIME_SUFFIX):
            path = directory / f"{key}{suffix}"
            path.write_bytes(b"x" * size)
            os.utime(path, (now - age, now - age))


def test_trim_deletes_the_least_recently_used_entries_down_to_the_limit(tmp_path):
    _entries(tmp_path, {"old": 300, "older": 400, "new": 10, "newer": 1, "middle": 100})
    (tmp_path / "unrelated.txt").write_bytes(b"y" * 1000)  # not an entry: never counted or deleted
    assert compile_cache.trim(tmp_path, max_bytes=500) == (0, 0)  # 5 entries of 100 bytes fit
    assert compile_cache.trim(tmp_path, max_bytes=250) == (3, 300)  # the three least recently used go
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == ["new-atime", "new-cache", "newer-atime", "newer-cache", "unrelated.txt"]
    # a read updates the access time: that entry counts as used, the other one goes
    now = time.time()
    os.utime(tmp_path / "new-cache", (now, now - 10))
    assert compile_cache.trim(tmp_path, max_bytes=100) == (1, 100)
    assert (tmp_path / "new-cache").exists() and not (tmp_path / "newer-cache").exists()
    assert compile_cache.trim(tmp_path, max_bytes=0) == (1, 100) and [p.name for p in tmp_path.iterdir()] == [
        "unrelated.txt"
    ]


def test_trim_skips_entries_another_process_deleted(tmp_path, monkeypatch):
    _entries(tmp_path, {"a": 30, "b": 20, "c": 10})
    (tmp_path / "a-atime").unlink()  # as JAX without a size limit writes: no access-time file
    real_unlink = os.unlink

    def racing_unlink(path):  # another process trimmed "b" first
        if Path(path).name == "b-cache":
            real_unlink(path)
            raise FileNotFoundError(path)
        real_unlink(path)

    monkeypatch.setattr(compile_cache.os, "unlink", racing_unlink)
    assert compile_cache.trim(tmp_path, max_bytes=100) == (2, 200)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c-atime", "c-cache"]


def test_enable_trims_the_directory_once(tmp_path, jax_cache_config, monkeypatch):
    path = tmp_path / "c"
    path.mkdir()
    _entries(path, {"old": 100, "new": 1}, size=600)
    monkeypatch.setattr(compile_cache, "MAX_SIZE_BYTES", 1000)
    assert compile_cache.enable({ENV: str(path)}) == str(path)
    assert not (path / "old-cache").exists() and (path / "new-cache").exists()
    # a size limit of the user's (JAX's own eviction) is left to JAX: nothing trimmed, access times written
    _entries(path, {"old": 100}, size=600)
    (path / "old-atime").unlink()
    jax.config.update("jax_compilation_cache_dir", None)  # as in a new process
    assert compile_cache.enable({ENV: str(path), "JAX_COMPILATION_CACHE_MAX_SIZE": "5000"}) == str(path)
    assert (path / "old-cache").exists() and (path / "old-atime").exists()


def test_trim_gives_entries_written_without_a_size_limit_their_access_time(tmp_path):
    """JAX without a size limit writes no <key>-atime files; JAX with one reads every entry's at each
    write and fails the write without it. trim writes the missing ones (last use, JAX's format)."""
    _entries(tmp_path, {"a": 50, "b": 5})
    for key in ("a", "b"):
        (tmp_path / f"{key}-atime").unlink()
    last_use_b = (tmp_path / "b-cache").stat().st_mtime_ns
    assert compile_cache.trim(tmp_path, max_bytes=None) == (0, 0)
    assert int.from_bytes((tmp_path / "b-atime").read_bytes(), "little") == last_use_b
    assert (tmp_path / "a-atime").exists()
    lru_cache = pytest.importorskip("jax._src.lru_cache")  # JAX's own size-limited cache reads them
    lru_cache.LRUCache(str(tmp_path), max_size=250).put("c", b"x" * 100)  # evicts the least recent, "a"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.endswith("-cache")) == ["b-cache", "c-cache"]


# ---- the command line ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [["--no-compile-cache", "run"], ["run", "--no-compile-cache"], ["sweep", "--run", "r", "--no-compile-cache"]],
)
def test_no_compile_cache_flag(argv, tmp_path, jax_cache_config, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "c"))
    args = cli.build_parser().parse_args(argv)
    assert cli.compile_cache(args) is None
    assert os.environ[ENV] == "off"  # inherited by the processes the command starts
    assert not jax.config.jax_enable_compilation_cache and not (tmp_path / "c").exists()


@pytest.mark.parametrize("argv", [["run"], ["train-decentralized"], ["domain", "lp"], ["sweep", "--run", "r"]])
def test_compiling_commands_turn_the_cache_on(argv, tmp_path, jax_cache_config, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "c"))
    assert cli.compile_cache(cli.build_parser().parse_args(argv)) == str(tmp_path / "c")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "c")


@pytest.mark.parametrize("argv", [["config"], ["report", "--run", "r"], ["config", "--no-compile-cache"]])
def test_commands_that_compile_nothing_leave_it_alone(argv, tmp_path, jax_cache_config, monkeypatch):
    monkeypatch.setenv(ENV, str(tmp_path / "c"))
    assert cli.compile_cache(cli.build_parser().parse_args(argv)) is None
    assert os.environ[ENV] == str(tmp_path / "c") and not (tmp_path / "c").exists()


def test_main_sets_up_the_cache_first_and_warns_in_one_line(tmp_path, jax_cache_config, monkeypatch, capsys):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv(ENV, str(tmp_path / "file" / "jax"))
    # a configuration error stops `run` before any work; the cache was set up (and warned about) before it
    code = cli.main(["run", "--out", str(tmp_path / "out"), "--set", "vm.epoch=1", "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[0].startswith("implicit-rec: warning: compilation cache off: cannot write to ")
    assert str(tmp_path / "file" / "jax") in err[0] and ENV in err[0]
    assert err[1].startswith("implicit-rec: error: ") and "vm.epoch" in err[1]
    monkeypatch.setenv(ENV, str(tmp_path / "c"))
    assert cli.main(["--no-compile-cache", "run", "--out", str(tmp_path / "out"), "--set", "vm.epoch=1"]) == 2
    assert os.environ[ENV] == "off" and not (tmp_path / "c").exists()


# ---- a second process reads the first one's programs ---------------------------------------------

PROBE = textwrap.dedent(
    """
    import json
    import jax
    import jax.numpy as jnp
    from implicit_rec import compile_cache

    events = []
    jax.monitoring.register_event_listener(lambda event, **kw: events.append(event))
    path = compile_cache.enable()


    @jax.jit
    def f(x):
        return jnp.tanh(x @ x.T + 1.0).sum(axis=0)


    f(jnp.arange(64.0).reshape(8, 8)).block_until_ready()
    print(json.dumps({
        "path": path,
        "hits": events.count("/jax/compilation_cache/cache_hits"),
        "misses": events.count("/jax/compilation_cache/cache_misses"),
    }))
    """
)


def probe(cache: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in JAX_VARS}
    # every program is written, however fast it compiled (enable keeps a user's setting of it)
    env.update({ENV: cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", "JAX_PLATFORMS": "cpu"})
    done = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_second_process_reads_the_cache(tmp_path):
    cache = tmp_path / "cache"
    first = probe(str(cache))
    assert first["path"] == str(cache) and first["hits"] == 0 and first["misses"] >= 1
    entries = sorted(p.name for p in cache.glob("*-cache"))
    assert len(entries) == first["misses"]  # one file per compiled program
    second = probe(str(cache))
    assert second == {"path": str(cache), "hits": first["misses"], "misses": 0}
    assert sorted(p.name for p in cache.glob("*-cache")) == entries  # nothing new written
    off = probe("off")
    assert off == {"path": None, "hits": 0, "misses": 0}
