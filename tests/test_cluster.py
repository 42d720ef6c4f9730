"""Meta-training on a Ray cluster: a head started here (loopback only, ended at the end), runs
with 1 and 2 workers equal to the local run bit for bit, a worker killed mid-iteration
replaced with the iteration's result unchanged, evaluation split over workers, and bad
settings and unreachable clusters refused before any work."""

import os

# Ray reads these when it is imported: every Ray process of these tests binds the loopback
# interface only, and the test cluster runs without tokens (it is reachable from here alone)
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_AUTH_MODE"] = "disabled"
os.environ["RAY_worker_niceness"] = "0"  # workers at normal priority, as metarobot starts them

import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from metarobot import checkpoint, make_family  # noqa: E402
from metarobot.cli import main  # noqa: E402
from metarobot.config import TrainConfig, make_policy  # noqa: E402
from metarobot.evaluation import evaluate  # noqa: E402
from metarobot.train import meta_iteration, train  # noqa: E402
from metarobot.sharding import shard_chunks  # noqa: E402
from metarobot.workers import InProcessWorkers  # noqa: E402
from metarobot.cluster import make_workers  # noqa: E402

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # a Ray head of their own: tens of seconds

SMALL = dict(family="HalfCheetahVel", meta_batch_size=4, trajectories_per_task=2,
             chunk_samples=100, threads=1, family_overrides={"horizon": 50})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_cli() -> str:
    return str(Path(sys.executable).with_name("ray"))


def _own_processes(marker: str):
    """Process ids of this machine whose command line names marker (the test head's own
    temporary directory: its daemons and workers, nobody else's)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except OSError:  # gone meanwhile, or not ours to read
            pass
    return pids


@pytest.fixture(scope="module")
def head():
    """A Ray head of these tests' own on 127.0.0.1 with 3 CPUs, in its own temporary
    directory and port; its address. Ended at the end by its own process ids (the `ray start
    --block` process group and every process naming its directory), never `ray stop`, which
    would end every Ray instance of the user on this machine."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="mrray", dir="/tmp")  # Ray's socket paths must be short
    log = open(Path(temp) / "head.log", "w")
    proc = subprocess.Popen(
        [_ray_cli(), "start", "--head", "--block", "--port", str(port),
         "--node-ip-address", "127.0.0.1", "--num-cpus", "3", "--include-dashboard", "false",
         "--disable-usage-stats", "--temp-dir", temp,
         "--object-store-memory", str(100 * 2 ** 20)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:  # up once its port accepts connections
            assert proc.poll() is None, (Path(temp) / "head.log").read_text()[-2000:]
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "the test's Ray head did not start"
                time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        if ray.is_initialized():
            ray.shutdown()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                pass
            for pid in _own_processes(temp):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                pass
            time.sleep(1.0)
            if proc.poll() is not None and not _own_processes(temp):
                break
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _csv(path: Path):
    import csv
    with open(path, newline="") as f:
        return [(r["pre_return"], r["post_return"], r["kl"], r["backtracks"])
                for r in csv.DictReader(f)]


def _same_params(a: Path, b: Path) -> None:
    pa, _ = checkpoint.load(a)
    pb, _ = checkpoint.load(b)
    assert set(pa) == set(pb)
    for k in pa:
        assert torch.equal(pa[k], pb[k]), k


def test_runs_on_one_and_two_workers_equal_the_local_run(head, tmp_path):
    """The local run (this process's torch threads, one chunk executor), Ray with 1
    worker x 2 threads and with 2 workers x 1 thread: the same bits."""
    runs = {}
    for name, extra in {"local": {},
                        "ray1": dict(cluster="ray", ray_address=head, workers=1,
                                     threads_per_worker=2),
                        "ray2": dict(cluster="ray", ray_address=head, workers=2)}.items():
        runs[name] = train(TrainConfig(**SMALL, **extra, iterations=3), tmp_path / name,
                           progress=False)
        assert not ray.is_initialized()  # the run's connection is closed at its end
    local = _csv(tmp_path / "local" / "progress.csv")
    assert len(local) == 3
    for name in ("ray1", "ray2"):
        assert _csv(tmp_path / name / "progress.csv") == local, name
        _same_params(runs["local"], runs[name])
    # the cluster's time beyond the workers' is logged
    import csv
    with open(tmp_path / "ray2" / "progress.csv", newline="") as f:
        assert all(float(r["time_transfer"]) >= 0 for r in csv.DictReader(f))

    # a cluster run resumes in one process (--cluster local drops its Ray settings), exactly
    for name in ("local", "ray2"):
        extra = ["--cluster", "local"] if name == "ray2" else []
        assert main(["train", "--out", str(tmp_path / name), "--resume", "--iterations", "4",
                     "--quiet", *extra]) == 0
    assert _csv(tmp_path / "ray2" / "progress.csv") == _csv(tmp_path / "local" / "progress.csv")
    _same_params(runs["local"], runs["ray2"])

    # evaluation split over two workers gives the local evaluation's returns
    kwargs = dict(tasks=3, steps=1, trajectories=2, threads=1)
    alone = evaluate(runs["local"], **kwargs)
    spread = evaluate(runs["local"], cluster="ray", ray_address=head, workers=2, **kwargs)
    assert spread["per_task"] == alone["per_task"]


def test_a_worker_killed_mid_iteration_is_replaced_and_the_result_unchanged(head):
    from metarobot.cluster import RayWorkers
    config = TrainConfig(**SMALL, cluster="ray", ray_address=head, workers=2)
    family = make_family(config.family, **config.family_overrides)
    policy = make_policy(config, family)
    start = {n: p.detach().clone() for n, p in policy.params().items()}

    local = dict(start)
    with InProcessWorkers(config, family, policy) as workers:
        for iteration in range(2):
            local, _ = meta_iteration(config, family, policy, local, iteration, workers=workers)

    theta = dict(start)
    with RayWorkers(config) as workers:
        assert len(set(workers.pids)) == 2
        product = workers.fisher_product
        calls = {"n": 0}

        def product_killing_worker_1(v):
            calls["n"] += 1
            if calls["n"] == 3:  # the third conjugate-gradient product of the iteration
                os.kill(workers.pids[1], signal.SIGKILL)
            return product(v)
        victim = workers.pids[1]
        theta, _ = meta_iteration(config, family, policy, theta, 0, workers=workers)
        workers.fisher_product = product_killing_worker_1
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            theta, _ = meta_iteration(config, family, policy, theta, 1, workers=workers)
        assert calls["n"] > 3  # the conjugate gradient went on after the loss
        assert workers.replaced == 1
        assert workers.pids[1] != victim
        assert any("worker 1 was lost" in str(w.message) for w in caught)
        # evaluation: a worker killed before it answers is replaced, its tasks evaluated again
        tasks = family.sample_tasks(3, 11)
        victim = workers.pids[0]
        os.kill(victim, signal.SIGKILL)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            spread = workers.curves(theta, tasks, 1, 2, 0.1, 5, "current")
        assert workers.replaced == 2 and workers.pids[0] != victim
        assert any("worker 0 was lost" in str(w.message) for w in caught)
    for n in local:
        assert torch.equal(local[n], theta[n]), n
    with InProcessWorkers(config, family, policy) as alone:
        expected = alone.curves(theta, tasks, 1, 2, 0.1, 5, "current")
    assert spread.returns.tolist() == expected.returns.tolist()
    assert spread.measures.keys() == expected.measures.keys()
    for name in expected.measures:
        assert spread.measures[name].tolist() == expected.measures[name].tolist(), name


def test_unreachable_and_malformed_addresses_fail_fast_and_write_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    base = ["train", "--family", "HalfCheetahVel", "--iterations", "1", "--out", str(out),
            "--cluster", "ray"]
    with pytest.raises(SystemExit) as exc:
        main(base + ["--ray-address", "not an address"])
    assert exc.value.code == 2
    assert "argument --ray-address: ray_address should be 'auto' or HOST:PORT" in \
        capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--ray-address", "10.0.0.1:99999"])
    assert "port 1-65535" in capsys.readouterr().err

    t0 = time.perf_counter()
    assert main(base + ["--ray-address", f"127.0.0.1:{_free_port()}"]) == 2  # nobody listens
    assert time.perf_counter() - t0 < 30
    assert "cannot reach a Ray cluster at 127.0.0.1:" in capsys.readouterr().err
    assert not out.exists()
    assert not ray.is_initialized()


def test_cluster_settings_that_do_not_hold_together_are_refused():
    with pytest.raises(ValueError, match="workers 2 needs cluster 'ray'"):
        TrainConfig(**SMALL, workers=2)
    with pytest.raises(ValueError, match="ray_address .* needs cluster 'ray'"):
        TrainConfig(**SMALL, ray_address="auto")
    TrainConfig(**SMALL, cluster="ray", workers=5)  # values that hold together; the split:
    with pytest.raises(ValueError, match="5 workers need at least 5 task chunks; the "
                                         "meta-batch has 4"):
        make_workers(TrainConfig(**SMALL, cluster="ray", workers=5))  # before connecting
    with pytest.raises(ValueError, match="baseline_fit 'previous'"):
        TrainConfig(**SMALL, cluster="ray", workers=2, baseline_fit="previous")
    TrainConfig(**SMALL, cluster="ray", workers=1, baseline_fit="previous")  # one shard: fine
    with pytest.raises(ValueError, match="workers should be an integer >= 1"):
        TrainConfig(**SMALL, cluster="ray", workers=0)


def test_without_ray_the_cluster_says_how_to_install_it(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    config = TrainConfig(**SMALL, cluster="ray")
    with pytest.raises(ValueError, match=r"needs Ray, which is not installed: pip install -e "
                                         r"\"\.\[ray\]\""):
        make_workers(config)


def test_shards_are_runs_of_whole_chunks_even_in_tasks():
    chunks = [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    assert shard_chunks(chunks, 1) == [chunks]
    assert shard_chunks(chunks, 2) == [[(0, 2), (2, 4)], [(4, 6), (6, 8), (8, 9)]]
    assert shard_chunks(chunks, 5) == [[c] for c in chunks]
    three = shard_chunks(chunks, 3)
    assert [c for s in three for c in s] == chunks and all(three)


def test_ray_connects_from_outside_a_source_tree_that_would_shadow_the_package(tmp_path,
                                                                               monkeypatch):
    """Ray puts the driver's working directory first on its workers' path: from a checkout
    whose metarobot is not the imported one (a regular install run from its clone), the
    driver connects from the imported package's directory, and comes back."""
    import metarobot
    from metarobot.cluster import _outside_a_source_tree
    imported = Path(metarobot.__file__).resolve().parent
    clone = tmp_path / "clone"
    (clone / "metarobot").mkdir(parents=True)
    (clone / "metarobot" / "__init__.py").write_text("")
    monkeypatch.chdir(clone)
    with _outside_a_source_tree():
        assert Path.cwd() == imported.parent
    assert Path.cwd() == clone
    monkeypatch.chdir(imported.parent)  # the package's own tree (an editable install): stay
    with _outside_a_source_tree():
        assert Path.cwd() == imported.parent
    monkeypatch.chdir(tmp_path)  # no metarobot here: stay
    with _outside_a_source_tree():
        assert Path.cwd() == tmp_path
    # and it is where the driver connects from: ray.init sees the package's directory
    from metarobot.cluster import RayWorkers
    seen = []

    def init(**kwargs):
        seen.append(Path.cwd())
        raise ConnectionError("recorded")
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", init)
    monkeypatch.chdir(clone)
    with pytest.raises(ValueError, match="cannot connect"):
        RayWorkers(TrainConfig(**SMALL, cluster="ray", ray_address="auto"))
    assert seen == [imported.parent] and Path.cwd() == clone


@pytest.mark.parametrize("algo", ["fomaml-trpo", "reptile", "trpo", "ppo"])
def test_the_other_learners_on_two_workers_equal_the_local_run(head, tmp_path, algo):
    extra = dict(algo=algo, iterations=2, **({"inner_steps": 2} if algo == "reptile" else {}))
    local = train(TrainConfig(**SMALL, **extra), tmp_path / "local", progress=False)
    spread = train(TrainConfig(**SMALL, **extra, cluster="ray", ray_address=head, workers=2),
                   tmp_path / "ray", progress=False)
    _same_params(local, spread)
