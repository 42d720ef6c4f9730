"""The metarobot command line.

  metarobot train --family HalfCheetahDir --algo maml-trpo --out runs/cheetah-dir
  metarobot train --family HalfCheetahDir --algo trpo --out runs/cheetah-dir-dr
                                 the baseline: one policy for the whole family (domain
                                 randomisation), no meta-learning; evaluate adapts it as MAML
  metarobot evaluate runs/cheetah-dir --tasks 40 --steps 3 --json eval.json --plot eval.png
  metarobot curves runs/cheetah-dir --evaluations eval.json --out curve.png   training curve
  metarobot adapt runs/cheetah-dir --task '{"direction": -1}' --out adapted.safetensors
  metarobot families                          the task families, their sizes and parameters
  metarobot render AntTerrainDir --out ant.png  a frame of a task (MuJoCo's offscreen renderer)
  metarobot rollout HalfCheetahVel --tasks 8  episodes of a random policy, returns, throughput
  metarobot export runs/cheetah-dir --format onnx --out cheetah.onnx     a policy for a robot
  metarobot sim-robot HalfCheetahDir --task '{"direction": 1}' --port 9870  a simulated robot
  metarobot hil runs/cheetah-dir --robot udp://127.0.0.1:9870 --episodes 4 --adapt-steps 1
  metarobot hil-compare hil-sim hil-robot --out cmp.png   two runs' joints, RMS difference
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional


def _families(args: argparse.Namespace) -> int:
    import metarobot
    print("| family | obs | act | horizon (steps) | env step (s) | task parameters | "
          "actuators | description |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in metarobot.list_families():
        fam = metarobot.make_family(name)
        model = fam.load_model()
        params = "; ".join(d.describe() for d in fam.parameters)
        step = model.opt.timestep * fam.frame_skip
        actuators = ("the model's motors, no delay" if fam.actuators is None
                     else fam.actuators.describe())
        print(f"| {name} | {fam.observation_dim(model)} | {model.nu} | {fam.horizon} | "
              f"{step:g} | {params} | {actuators} | {fam.description} |")
    print()
    print("Overrides: make_family(FAMILY, field=value), or train --set field=value (JSON). "
          "Every family takes:")
    print()
    names = metarobot.list_families()
    tables = {n: metarobot.make_family(n).overrides() for n in names}
    every = [k for k in tables[names[0]] if all(k in t for t in tables.values())]
    for key in every:
        print(f"- {key}: {tables[names[0]][key][0]}")
    print("- each task parameter by its name: a (low, high) pair for a uniform one, a list of "
          "values for a set, the radius for a disc, terrain kinds for a terrain")
    print()
    print("Each family's own overrides and the current values of all but dynamics:")
    print()
    print("| family | its own | current values |")
    print("| --- | --- | --- |")
    for name in names:
        own = ", ".join(k for k in tables[name] if k not in every)
        now = "; ".join(f"{k}={v!r}" for k, (_, v) in tables[name].items() if k != "dynamics")
        print(f"| {name} | {own} | {now} |")
    return 0


def _render(args: argparse.Namespace) -> int:
    import metarobot
    from metarobot import render
    names = metarobot.list_families() if args.family == "all" else [args.family]
    out = Path(args.out)
    for name in names:
        family = metarobot.make_family(name)
        task = (family.sample_tasks(1, seed=args.seed)[0] if args.task is None
                else _parse_task(family, args.task))
        image = render.frame(family, task, steps=args.steps, width=args.width,
                             height=args.height, seed=args.seed)
        path = render.save_png(image, out / f"{name}.png" if args.family == "all" else out)
        print(f"{name}: {task} -> {path}")
    return 0


def _video(args: argparse.Namespace) -> int:
    from metarobot import render
    from metarobot.runs import load_policy
    loaded = load_policy(args.checkpoint)
    family = loaded.family
    task = (family.sample_tasks(1, seed=args.seed)[0] if args.task is None
            else _parse_task(family, args.task))
    path = render.record(loaded.policy, family, task, args.out, seconds=args.seconds,
                         width=args.width, height=args.height, fps=args.fps, seed=args.seed,
                         distance=args.distance)
    print(f"{family.name}: {task} -> {path}")
    return 0


def _rollout(args: argparse.Namespace) -> int:
    import torch
    import metarobot
    torch.manual_seed(args.seed)
    family = metarobot.make_family(args.family, **({"horizon": args.horizon}
                                                   if args.horizon is not None else {}))
    tasks = family.sample_tasks(args.tasks, seed=args.seed)
    sim = metarobot.BatchSim(family, tasks, envs_per_task=args.envs_per_task, seed=args.seed,
                             num_threads=args.threads)
    policy = metarobot.GaussianMLPPolicy(sim.observation_dim, sim.action_dim)
    start = time.perf_counter()
    traj = sim.rollout(policy, deterministic=args.deterministic)
    elapsed = time.perf_counter() - start
    steps = int(traj.valid.sum())
    returns = traj.returns
    per_task = [float(returns[traj.task_index == i].mean()) for i in range(len(tasks))]
    result = {
        "family": family.name, "simulations": sim.num_envs, "threads": sim.num_threads,
        "env_steps": steps, "seconds": elapsed, "env_steps_per_second": steps / elapsed,
        "mean_return": float(returns.mean()),
        "tasks": [{"task": t.as_dict(), "mean_return": r} for t, r in zip(tasks, per_task)],
        "diverged": int(traj.diverged.sum()),
    }
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{sim}: {steps} env steps in {elapsed:.3f} s ({steps / elapsed:,.0f} /s), "
              f"mean return {returns.mean():.2f} (a randomly initialised policy)")
        for t, r in zip(tasks, per_task):
            print(f"  {t!r}: {r:.2f}")
    return 0


def _text_type(check: Callable[[str], Any]) -> Callable[[str], str]:
    """An argparse type: the flag's text, once check(text) has not raised ValueError."""
    def parse(text: str) -> str:
        try:
            check(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        return text
    return parse


def _device(text: str) -> str:
    """An argparse type: a device this machine has (cpu, cuda, cuda:N, auto)."""
    from metarobot.device import resolve
    return _text_type(resolve)(text)


def _ray_address(text: str) -> str:
    """An argparse type: 'auto' or HOST:PORT (checked for form, not reached, here)."""
    from metarobot.config import parse_ray_address
    return _text_type(parse_ray_address)(text)


def _add_cluster_flags(parser: argparse.ArgumentParser) -> None:
    """evaluate's cluster flags (train's come from TrainConfig)."""
    from metarobot.checks import COUNT
    from metarobot.config import CLUSTERS
    parser.add_argument("--cluster", choices=CLUSTERS, default="local",
                        help="local, or ray: the tasks split over Ray workers (default local)")
    parser.add_argument("--ray-address", type=_ray_address, default=None,
                        help="with --cluster ray: auto, or HOST:PORT of a Ray head (default: a "
                             "Ray instance on this machine)")
    parser.add_argument("--workers", type=COUNT.parse, default=1,
                        help="with --cluster ray: Ray workers (default 1)")
    parser.add_argument("--threads-per-worker", type=COUNT.parse, default=1,
                        help="with --cluster ray: CPUs of each worker (default 1)")


def _boolean(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field, its default and help taken from the dataclass."""
    from metarobot import checks
    from metarobot.config import FIELD_CHOICES, FIELD_RANGES, TrainConfig, field_docs
    docs = {k: v.replace("%", "%%") for k, v in field_docs().items()}  # argparse formats help
    for field in dataclasses.fields(TrainConfig):
        if field.name == "family_overrides":
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        kwargs: Dict[str, Any] = {"help": docs.get(field.name, ""), "default": None}
        if field.name == "hidden_sizes":
            kwargs.update(type=checks.COUNT.parse, nargs="+")
        elif field.name == "device":
            kwargs.update(type=_device)
        elif field.name == "ray_address":
            kwargs.update(type=_ray_address)
        elif isinstance(default, bool):
            kwargs.update(type=_boolean, metavar="{true,false}")
        elif field.name in FIELD_RANGES:
            kwargs.update(type=FIELD_RANGES[field.name].parse)
        elif field.name in FIELD_CHOICES:
            kwargs.update(type=str, choices=FIELD_CHOICES[field.name])
        else:
            kwargs.update(type=str)
        if default is not dataclasses.MISSING and default is not None:
            kwargs["help"] += f" (default {default})"
        parser.add_argument(flag, **kwargs)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a family field, e.g. --set horizon=100 (JSON values)")


def _given_settings(args: argparse.Namespace) -> Dict[str, Any]:
    """The TrainConfig fields whose flags were given, as the dataclass takes them (--set's
    family fields as family_overrides)."""
    from metarobot.config import TrainConfig
    values: Dict[str, Any] = {}
    for field in dataclasses.fields(TrainConfig):
        v = getattr(args, field.name, None)
        if v is not None:
            values[field.name] = tuple(v) if field.name == "hidden_sizes" else v
    overrides = _set_values(args.set)
    if overrides:
        values["family_overrides"] = overrides
    return values


def _set_values(items: List[str]) -> Dict[str, Any]:
    """--set FIELD=VALUE flags as a dict, VALUE as JSON (or the text when it is not JSON)."""
    overrides = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"--set takes FIELD=VALUE, got {item!r}")
        try:
            overrides[key] = json.loads(raw)
        except json.JSONDecodeError:
            overrides[key] = raw
    return overrides


def _train(args: argparse.Namespace) -> int:
    from metarobot.config import TrainConfig
    from metarobot.runs import resume_settings
    from metarobot.train import train
    given = _given_settings(args)
    if args.resume:
        config = resume_settings(args.out, given,
                                 source=args.resume if isinstance(args.resume, str) else None,
                                 progress_csv=args.progress, branch=args.branch)
    elif args.progress is not None or args.branch:
        raise ValueError(f"{'--progress' if args.progress is not None else '--branch'} goes "
                         f"with --resume CHECKPOINT")
    else:
        config = TrainConfig(**given)
    path = train(config, args.out, resume=bool(args.resume), progress=not args.quiet)
    print(f"checkpoint: {path}")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from metarobot.evaluation import evaluate
    result = evaluate(args.checkpoint, tasks=args.tasks, steps=args.steps, seed=args.seed,
                      trajectories=args.trajectories, lr=args.lr, json_path=args.json,
                      plot_path=args.plot, threads=args.threads,
                      baseline_fit=args.baseline_fit, device=args.device,
                      cluster=args.cluster, ray_address=args.ray_address, workers=args.workers,
                      threads_per_worker=args.threads_per_worker)
    print(f"{result['family']} after {result['iteration']} iterations, {result['tasks']} "
          f"held-out tasks, {result['trajectories_per_task']} trajectories per step:")
    for k, m, e in zip(result["steps"], result["mean_return"], result["stderr"]):
        measures = "".join(f", {name} {v['mean'][k]:.3f} +- {v['stderr'][k]:.3f}"
                           for name, v in result["measures"].items())
        print(f"  {k} steps: {m:9.2f} +- {e:.2f}{measures}")
    return 0


def _curves(args: argparse.Namespace) -> int:
    from metarobot.curves import plot_training
    drawn = plot_training(args.runs, args.out, labels=args.label, x=args.x, smooth=args.smooth,
                          evaluations=args.evaluations, title=args.title)
    for run, s in zip(args.runs, drawn):
        print(f"{run}: up to x = {s['x'][-1]:g}, mean of the last {args.smooth} iterations: "
              f"before adaptation {s['pre_return'][-1]:.1f}, after {s['post_return'][-1]:.1f}")
    print(f"wrote {args.out}")
    return 0


def _task_json(text: str) -> Dict[str, Any]:
    try:
        task = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--task should be JSON such as '{{\"direction\": 1}}': {exc}") \
            from None
    if not isinstance(task, dict):
        raise ValueError(f"--task should be a JSON object of task parameters, got {text!r}")
    return task


def _parse_task(family, text: str):
    return family.task(**_task_json(text))


def _export(args: argparse.Namespace) -> int:
    from metarobot.deploy import export
    from metarobot.deploy.deployment import DEPLOY_FILE, deploy_path_of_onnx
    order = None
    if args.motor_order is not None:
        order = [n.strip() for n in args.motor_order.split(",")]
    meta = export(args.checkpoint, args.format, args.out, overwrite=args.overwrite,
                  motor_order=order)
    deploy = (deploy_path_of_onnx(args.out) if args.format == "onnx"
              else Path(args.out) / DEPLOY_FILE)
    print(f"{meta['family']} policy ({meta['obs_dim']} observations -> {meta['act_dim']} "
          f"controls, every {meta['control_period'] * 1e3:g} ms) exported as {args.format}: "
          f"{args.out}; deployment config {deploy}")
    return 0


def _json_object(text: Optional[str], flag: str) -> Optional[Dict[str, Any]]:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{flag} should be a JSON object: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"{flag} should be a JSON object, got {text!r}")
    return value


def _sim_robot(args: argparse.Namespace) -> int:
    from metarobot.deploy.protocol import key_file_warning, read_key_file
    from metarobot.deploy.sim_robot import RealityGap, main_args
    gap = RealityGap(obs_noise=args.obs_noise, latency_ms=args.latency_ms,
                     jitter_ms=args.jitter_ms, drop=args.drop, saturation=args.saturation,
                     dynamics=_json_object(args.dynamics, "--dynamics"),
                     obs_noise_scale=args.obs_noise_scale)
    overrides = _set_values(args.set)
    if args.task is None:
        import metarobot
        drawn = metarobot.make_family(args.family, **overrides).sample_tasks(1, seed=args.seed)
        args.task = json.dumps(drawn[0].as_dict())
    if args.protocol == "unitree":
        if args.key_file or args.safe_state != "zero" or args.rate is not None:
            raise ValueError("--key-file, --safe-state and --rate are the UDP robot's; the "
                             "Unitree one damps (--damping) after --command-timeout-ms and "
                             "steps at the model's physics rate")
        from metarobot.deploy.unitree import sim as unitree_sim
        timeout = (args.command_timeout_ms * 1e-3 if args.command_timeout_ms is not None
                   else None)
        return unitree_sim.main_args(args.family, _json_object(args.task, "--task"),
                                     interface=args.interface, domain=args.domain, gap=gap,
                                     seed=args.seed, overrides=overrides,
                                     duration=args.duration, command_timeout=timeout,
                                     damping=args.damping)
    key = read_key_file(args.key_file) if args.key_file else None
    if args.key_file and key_file_warning(args.key_file):
        print(key_file_warning(args.key_file), file=sys.stderr)
    timeout = args.command_timeout_ms * 1e-3 if args.command_timeout_ms is not None else None
    return main_args(args.family, args.task, args.port, args.host, gap, args.seed, overrides,
                     args.duration, rate=args.rate, key=key, command_timeout=timeout,
                     safe_state=args.safe_state, damping=args.damping)


def _hil(args: argparse.Namespace) -> int:
    from metarobot.deploy.controller import Controller
    from metarobot.deploy.protocol import key_file_warning, parse_address, read_key_file
    from metarobot.deploy.runner import Limits, check_report_dir, mcap_path, run, summary
    from metarobot.deploy.udp import UdpRobot
    # everything that can be refused is, before the robot hears a word
    unitree = args.robot.startswith("unitree:")
    if unitree:
        from metarobot.deploy.unitree.dds import parse_unitree_url
        parse_unitree_url(args.robot)
        if args.key_file:
            raise ValueError("--key-file is the UDP robot's: DDS to a Unitree robot carries "
                             "no MAC (keep it on its own cable)")
    else:
        given = [flag for flag, value in (("--odometry", args.odometry),
                                          ("--command", args.command),
                                          ("--episode-s", args.episode_s),
                                          ("--command-hz", args.command_hz),
                                          ("--max-target-step", args.max_target_step))
                 if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} {'is' if len(given) == 1 else 'are'} a "
                             f"Unitree robot's (unitree://...); a UDP robot runs its own "
                             f"episodes and sends its reward with every observation")
        host, port = parse_address(args.robot)
    check_report_dir(args.report, args.overwrite)
    if args.mcap is not None and args.no_mcap:
        raise ValueError("--mcap names the MCAP file, --no-mcap writes none: give one")
    mcap = False if args.no_mcap else (args.mcap if args.mcap is not None else True)
    mcap_path(args.report, mcap, args.overwrite)
    key = read_key_file(args.key_file) if args.key_file else None
    if args.key_file and key_file_warning(args.key_file):
        print(key_file_warning(args.key_file), file=sys.stderr)
    limits = Limits(stale_after=args.stale_ms * 1e-3, max_misses=args.max_misses,
                    joint_margin=args.joint_margin, max_velocity=args.max_velocity)
    deploy = None
    if args.deploy_config is not None:
        from metarobot.deploy.deployment import load_deployment_config
        deploy = load_deployment_config(args.deploy_config)
    controller = Controller.from_checkpoint(args.checkpoint, lr=args.lr, seed=args.seed,
                                            deploy=deploy)
    if unitree:
        robot = _unitree_robot(args, controller.deploy, controller.family)
    else:
        robot = UdpRobot(host, port, timeout=args.connect_timeout, key=key)
    try:
        report = run(controller, robot, episodes=args.episodes, adapt_steps=args.adapt_steps,
                     report_dir=args.report, rate=args.rate, limits=limits,
                     sample=args.sample, allow_mismatch=args.allow_mismatch,
                     overwrite=args.overwrite, mcap=mcap, progress=True)
    finally:
        robot.close()
    print("\n".join(summary(report)))
    if args.report:
        print(f"  report: {args.report}/report.json, report.png, cycles.csv")
    if report["mcap"]:
        print(f"  cycles as MCAP (Foxglove): {report['mcap']}")
    return 0 if report["stopped"] == "completed" else 1


def _hil_compare(args: argparse.Namespace) -> int:
    from metarobot.deploy.compare import compare_runs, rms_table
    result = compare_runs(args.a, args.b, out=args.out, json_path=args.json,
                          stage=args.stage, episode=args.episode)
    print("\n".join(rms_table(result)))
    json_path = args.json or Path(args.out).with_suffix(".json")
    print(f"plot: {args.out}; RMS differences: {json_path}")
    return 0


def _unitree_robot(args: argparse.Namespace, deploy: Dict[str, Any], family=None):
    """hil's Unitree robot: the flags' values, checked by UnitreeRobot before a word is sent."""
    from metarobot.deploy.unitree.robot import UnitreeRobot, safety_limits
    commands = ()
    if args.command:
        try:
            commands = tuple(float(v) for v in args.command.split(","))
        except ValueError:
            raise ValueError(f"--command should be numbers separated by commas (e.g. "
                             f"0.5,0,0), got {args.command!r}") from None
    extra = {} if args.max_target_step is None else {"max_target_step": args.max_target_step}
    limits = safety_limits(deploy, stand_s=args.stand_s, state_timeout=args.stale_ms * 1e-3,
                           **extra)
    return UnitreeRobot.from_url(args.robot, deploy, command_hz=args.command_hz,
                                 commands=commands, episode_s=args.episode_s, limits=limits,
                                 timeout=args.connect_timeout, odometry=args.odometry,
                                 family=family)


def _adapt(args: argparse.Namespace) -> int:
    from metarobot.evaluation import adapt_to_task
    task = _task_json(args.task)
    _, returns = adapt_to_task(args.checkpoint, task, steps=args.steps,
                               trajectories=args.trajectories, lr=args.lr, seed=args.seed,
                               out=args.out, threads=args.threads, device=args.device)
    print("mean return after 0.." + str(args.steps) + " steps: " +
          ", ".join(f"{r:.2f}" for r in returns))
    if args.out:
        print(f"adapted policy: {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line's parser: every flag's type checks its range (metarobot.checks), so
    a value outside what the flag means is refused before any work, naming the flag."""
    from metarobot.checks import COUNT, NONNEGATIVE_INT, POSITIVE, SEED, STEP_SIZE, Range
    parser = argparse.ArgumentParser(prog="metarobot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="meta-train a policy on a task family (--algo trpo: "
                                     "train one policy on all its tasks, the baseline)")
    _add_config_flags(p)
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--resume", nargs="?", const=True, default=False, metavar="CHECKPOINT",
                   help="continue the run in --out; with a checkpoint file (a committed one, "
                        "say), first make --out a run of it")
    p.add_argument("--progress", default=None, metavar="CSV",
                   help="with --resume CHECKPOINT: the progress.csv of the iterations before "
                        "it (e.g. benchmarks/results/<Family>_progress.csv)")
    p.add_argument("--branch", action="store_true",
                   help="with --resume CHECKPOINT: continue from the checkpoint's parameters "
                        "and iteration with the settings given here changed (e.g. --max-kl "
                        "0.01); a new run, recorded in --out/branch.json")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)
    p = sub.add_parser("evaluate", help="returns after 0..K adaptation steps on held-out tasks")
    p.add_argument("checkpoint", help="a checkpoint file or a run directory")
    p.add_argument("--tasks", type=COUNT.parse, default=40, help="held-out tasks (default 40)")
    p.add_argument("--steps", type=NONNEGATIVE_INT.parse, default=3,
                   help="adaptation steps (default 3)")
    p.add_argument("--seed", type=SEED.parse, default=0)
    p.add_argument("--trajectories", type=COUNT.parse, default=None,
                   help="per task and step (default 20; 40 for AntDir)")
    p.add_argument("--lr", type=STEP_SIZE.parse, nargs="+", default=None,
                   help="step size of each step, the last repeating (default the "
                        "checkpoint's: a Meta-SGD checkpoint's learned step sizes, Reptile's "
                        "inner step size, MAML's (and trpo's) inner step size then half of "
                        "it, the paper's 0.1 then 0.05)")
    p.add_argument("--json", default=None, help="write the result as JSON here")
    p.add_argument("--plot", default=None, help="write a PNG plot here")
    p.add_argument("--threads", type=NONNEGATIVE_INT.parse, default=0, help="0: one per CPU")
    from metarobot.config import BASELINE_FITS
    p.add_argument("--baseline-fit", default=None, choices=BASELINE_FITS,
                   help="baseline order of the advantages (default: the checkpoint's training "
                        "order; fresh: the paper's evaluation script, one new baseline per "
                        "task, so the first step's advantages are the centred returns)")
    p.add_argument("--device", type=_device, default="cpu",
                   help="where the adaptation steps run: cpu, cuda or auto (default cpu)")
    _add_cluster_flags(p)
    p.set_defaults(func=_evaluate)
    from metarobot.curves import X_AXES
    p = sub.add_parser("curves", help="training curves of runs (return before and after "
                                      "adaptation per iteration) as a PNG")
    p.add_argument("runs", nargs="+", help="run directories or their progress.csv files")
    p.add_argument("--out", required=True, help="the PNG to write")
    p.add_argument("--label", nargs="+", default=None, help="one name per run (default: the "
                                                             "run directory's name)")
    p.add_argument("--x", choices=tuple(X_AXES), default="iteration",
                   help="x axis (default iteration)")
    p.add_argument("--smooth", type=COUNT.parse, default=10,
                   help="moving average over this many iterations (default 10; 1: none)")
    p.add_argument("--evaluations", nargs="+", default=(), metavar="JSON",
                   help="evaluation results (metarobot evaluate --json) drawn at their "
                        "iteration: held-out return before and after one step")
    p.add_argument("--title", default=None)
    p.set_defaults(func=_curves)
    p = sub.add_parser("adapt", help="adapt a checkpoint's policy to one task")
    p.add_argument("checkpoint")
    p.add_argument("--task", required=True, help='task parameters as JSON: \'{"direction": 1}\'')
    p.add_argument("--steps", type=COUNT.parse, default=1, help="adaptation steps (default 1)")
    p.add_argument("--trajectories", type=COUNT.parse, default=20,
                   help="per step (default 20)")
    p.add_argument("--lr", type=STEP_SIZE.parse, default=None,
                   help="step size of every step (default the checkpoint's, as evaluate "
                        "and hil: Meta-SGD's learned step sizes, Reptile's inner step size, "
                        "MAML's (and trpo's) inner step size then half of it)")
    p.add_argument("--seed", type=SEED.parse, default=0)
    p.add_argument("--out", default=None, help="save the adapted policy here (.safetensors)")
    p.add_argument("--threads", type=NONNEGATIVE_INT.parse, default=0, help="0: one per CPU")
    p.add_argument("--device", type=_device, default="cpu",
                   help="where the adaptation steps run: cpu, cuda or auto (default cpu)")
    p.set_defaults(func=_adapt)
    p = sub.add_parser("export", help="export a policy for a robot (ONNX, or native C++)")
    p.add_argument("checkpoint", help="a checkpoint, a run directory or an adapted policy")
    p.add_argument("--format", choices=("onnx", "native"), required=True)
    p.add_argument("--out", required=True,
                   help="the .onnx file, or for native a folder (weights, C++ evaluator, "
                        "example program)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (refused otherwise)")
    p.add_argument("--motor-order", default=None, metavar="NAME,NAME,...",
                   help="the actuators' names in the robot's motor order, when it is not the "
                        "model's (the deployment config's policy <-> motor map)")
    p.set_defaults(func=_export)
    p = sub.add_parser("sim-robot", help="a simulated robot behind the UDP robot protocol")
    p.add_argument("family")
    p.add_argument("--task", default=None,
                   help="task parameters as JSON (default: one drawn from the family with "
                        "--seed, printed at the start)")
    p.add_argument("--port", type=Range(int, 0, 65535).parse, default=9870,
                   help="UDP port (0: any free one; default 9870)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--obs-noise-scale", type=Range(float, 0.0, 1000.0).parse, default=None,
                   help="the family's noise_scale: a factor on each sensor term's own noise "
                        "std (default 1, the training's; 0: exact sensors)")
    p.add_argument("--obs-noise", type=Range(float, low=0.0).parse, default=0.0,
                   help="std of extra Gaussian noise on each sensor term, in the term's own "
                        "units (rad, rad/s, m: as a term's noise), on top of its own")
    p.add_argument("--latency-ms", type=Range(float, low=0.0).parse, default=0.0,
                   help="the link's delay: controls take effect this long after they "
                        "arrive, on top of the task's command_delay_ms (both ms)")
    p.add_argument("--jitter-ms", type=Range(float, low=0.0).parse, default=0.0,
                   help="plus U(-jitter, jitter) ms")
    p.add_argument("--drop", type=Range(float, 0.0, 0.99).parse, default=0.0,
                   help="probability that a packet, either way, is lost")
    p.add_argument("--saturation", type=Range(float, 0.0, 1.0, open_low=True).parse,
                   default=1.0, help="controls clipped to this fraction of their ranges "
                                     "(torque families; a servo's limits are the task's "
                                     "strength and effort_limit)")
    p.add_argument("--dynamics", default=None,
                   help='model fields scaled once for this robot, e.g. \'{"body_mass": '
                        '[0.8, 1.2]}\'')
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="override a family field (JSON values)")
    p.add_argument("--seed", type=SEED.parse, default=0)
    p.add_argument("--duration", type=Range(float, low=0.0, open_low=True).parse,
                   default=None, help="seconds to run (default: until Ctrl-C)")
    p.add_argument("--rate", type=Range(float, 0.0, 10_000.0, open_low=True).parse,
                   default=None, help="control rate in Hz (default: the family's env step)")
    p.add_argument("--key-file", default=None,
                   help="shared key: every packet authenticated (HMAC-SHA256); the "
                        "controller needs the same file")
    p.add_argument("--command-timeout-ms", type=Range(float, low=0.0, open_low=True).parse,
                   default=None, help="without a valid ACTION this long, go to the safe "
                                      "state (default 5 control periods, at least 50 ms)")
    p.add_argument("--safe-state", choices=("zero", "damping"), default="zero",
                   help="the safe state: zero controls (no torque), or damping of each "
                        "actuated joint")
    p.add_argument("--damping", type=Range(float, low=0.0).parse, default=1.0,
                   help="the damping safe state's gain (controls per joint velocity unit; "
                        "Nm s/rad for --protocol unitree)")
    p.add_argument("--protocol", choices=("udp", "unitree"), default="udp",
                   help="udp: metarobot's UDP protocol (docs/hil.md); unitree: the robot's "
                        "DDS topics rt/lowstate and rt/lowcmd (docs/unitree.md)")
    p.add_argument("--interface", default="lo",
                   help="--protocol unitree: the network interface DDS uses (default lo)")
    p.add_argument("--domain", type=Range(int, 0, 232).parse, default=1,
                   help="--protocol unitree: the DDS domain (default 1, as unitree_mujoco)")
    p.set_defaults(func=_sim_robot)
    p = sub.add_parser("hil", help="run a policy on a robot: fixed-rate loop, watchdog, "
                                   "adaptation on the robot, report")
    p.add_argument("checkpoint")
    p.add_argument("--robot", required=True, help="udp://HOST:PORT (udp://[ADDRESS]:PORT "
                                                  "for IPv6), or unitree://INTERFACE?domain=N "
                                                  "(a Unitree Go2 over DDS)")
    p.add_argument("--command", default=None, metavar="VX,VY,YAW_RATE",
                   help="unitree: the operator's command for the run, in the deployment "
                        "config's command names and units (default zeros)")
    p.add_argument("--episode-s", type=Range(float, low=0.0, open_low=True).parse,
                   default=None, help="unitree: an episode ends after this long under the "
                                      "policy, then the robot stands (default: until stopped)")
    p.add_argument("--command-hz", type=Range(float, 1.0, 2000.0).parse, default=None,
                   help="unitree: LowCmds per second (default the training's PD rate)")
    p.add_argument("--stand-s", type=Range(float, low=0.0, open_low=True).parse,
                   default=2.0, help="unitree: seconds of the ramp to the standing pose")
    p.add_argument("--max-target-step", type=Range(float, low=0.0, open_low=True).parse,
                   default=None, metavar="RAD",
                   help="unitree: the safety machine's largest target change per policy step "
                        "(clamped; 5 clamped steps in a row stop; default 0.5). Sampled "
                        "actions, adaptation's data, move a walking gait's targets further")
    p.add_argument("--odometry", default=None, metavar="TOPIC",
                   help="unitree: the base's motion (SportModeState_ messages, e.g. "
                        "rt/sportmodestate from sim-robot or unitree_mujoco, or a "
                        "motion-capture pipeline's): the family's reward on the robot, for "
                        "--adapt-steps (default none: no reward)")
    p.add_argument("--key-file", default=None,
                   help="the robot's shared key (the same file as the robot's)")
    p.add_argument("--episodes", type=COUNT.parse, default=1,
                   help="episodes per stage (before adaptation, and after each step)")
    p.add_argument("--adapt-steps", type=NONNEGATIVE_INT.parse, default=0,
                   help="inner steps on the robot's episodes (default 0)")
    p.add_argument("--report", default=None, help="folder for report.json, report.png, "
                                                   "cycles.csv (a new or empty one)")
    p.add_argument("--overwrite", action="store_true",
                   help="write the report into a folder that holds an earlier run")
    p.add_argument("--mcap", default=None, metavar="PATH",
                   help="the cycles as an MCAP file (JSON messages, for Foxglove and mcap's "
                        "readers; default: run.mcap in the --report folder)")
    p.add_argument("--no-mcap", action="store_true", help="write no MCAP file")
    p.add_argument("--allow-mismatch", action="store_true",
                   help="run even when the robot's family, names, motor order or control "
                        "period differ from the deployment config's (recorded in the report)")
    p.add_argument("--deploy-config", default=None,
                   help="the deployment config to run by: an export's deploy.json (or its "
                        "folder, or its .onnx); default the checkpoint family's own")
    p.add_argument("--rate", type=Range(float, 1.0, 10_000.0).parse,
                   default=None, help="loop frequency in Hz, 1 to 10000 (default: the "
                                      "robot's control period)")
    p.add_argument("--lr", type=STEP_SIZE.parse, default=None,
                   help="inner step size of every step (default: the checkpoint's rule, as "
                        "adapt and evaluate: learned step sizes; else Reptile's inner_lr; "
                        "else MAML's (and trpo's) inner_lr, then half of it)")
    p.add_argument("--sample", type=_boolean, default=None, metavar="{true,false}",
                   help="sample actions (default: when adapting; else the mean)")
    p.add_argument("--stale-ms", type=Range(float, low=0.0, open_low=True).parse,
                   default=250.0, help="stop after this long without a new observation")
    p.add_argument("--max-misses", type=COUNT.parse, default=5,
                   help="stop after this many deadline misses in a row")
    p.add_argument("--joint-margin", type=Range(float, low=0.0).parse, default=0.5,
                   help="stop when an observed joint passes its range by more (rad or m; "
                        "default 0.5)")
    p.add_argument("--max-velocity", type=Range(float, low=0.0, open_low=True).parse,
                   default=100.0, help="stop when an observed joint velocity exceeds it "
                                       "(default 100)")
    p.add_argument("--connect-timeout", type=Range(float, low=0.0, open_low=True).parse,
                   default=2.0, help="seconds to wait for the robot's spec")
    p.add_argument("--seed", type=SEED.parse, default=0, help="seeds the sampled actions")
    p.set_defaults(func=_hil)
    p = sub.add_parser("hil-compare", help="two hil runs of the same policy: per joint the "
                                           "measured positions on one time axis, and their "
                                           "RMS difference")
    p.add_argument("a", help="a run: its report folder, report.json or .mcap file")
    p.add_argument("b", help="the other run")
    p.add_argument("--out", required=True, help="the plot (PNG)")
    p.add_argument("--json", default=None,
                   help="the RMS differences as JSON (default: --out with .json)")
    p.add_argument("--stage", type=NONNEGATIVE_INT.parse, default=0,
                   help="the adaptation stage of the episode compared (default 0)")
    p.add_argument("--episode", type=NONNEGATIVE_INT.parse, default=0,
                   help="the episode compared within the stage (default 0)")
    p.set_defaults(func=_hil_compare)
    p = sub.add_parser("families", help="list the task families")
    p.set_defaults(func=_families)
    p = sub.add_parser("render", help="render a frame of a family's task as PNG")
    p.add_argument("family", help="a family name, or 'all' (then --out is a folder)")
    p.add_argument("--out", required=True, help="PNG path (a folder with 'all')")
    p.add_argument("--task", default=None, help="task parameters as JSON (default: sampled)")
    p.add_argument("--steps", type=NONNEGATIVE_INT.parse, default=20,
                   help="random env steps before the frame")
    p.add_argument("--seed", type=SEED.parse, default=0)
    p.add_argument("--width", type=COUNT.parse, default=640, help="pixels")
    p.add_argument("--height", type=COUNT.parse, default=480, help="pixels")
    p.set_defaults(func=_render)
    p = sub.add_parser("video", help="an animated GIF of a checkpoint's controller on a task")
    p.add_argument("checkpoint", help="a checkpoint file or run directory")
    p.add_argument("--out", required=True, help="GIF path")
    p.add_argument("--task", default=None, help="task parameters as JSON (default: sampled)")
    p.add_argument("--seconds", type=POSITIVE.parse, default=15.0,
                   help="simulated seconds (at most the family's horizon)")
    p.add_argument("--fps", type=POSITIVE.parse, default=12.5,
                   help="frames per simulated second")
    p.add_argument("--distance", type=POSITIVE.parse, default=None,
                   help="camera distance to the robot, m")
    p.add_argument("--seed", type=SEED.parse, default=0,
                   help="the simulation's seed (reset noise, commands)")
    p.add_argument("--width", type=COUNT.parse, default=480, help="pixels")
    p.add_argument("--height", type=COUNT.parse, default=360, help="pixels")
    p.set_defaults(func=_video)
    p = sub.add_parser("rollout", help="roll out a policy on sampled tasks")
    p.add_argument("family")
    p.add_argument("--tasks", type=COUNT.parse, default=8, help="tasks to sample (default 8)")
    p.add_argument("--envs-per-task", type=COUNT.parse, default=4)
    p.add_argument("--seed", type=SEED.parse, default=0)
    p.add_argument("--threads", type=NONNEGATIVE_INT.parse, default=0, help="0: one per CPU")
    p.add_argument("--horizon", type=COUNT.parse, default=None, help="default: the family's")
    p.add_argument("--deterministic", action="store_true", help="mean actions, no noise")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=_rollout)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"metarobot: warning: {message}", file=sys.stderr)


def main(argv: Optional[List[str]] = None) -> int:
    import warnings
    args = build_parser().parse_args(argv)
    warnings.showwarning = _show_warning  # one line, not a source excerpt
    try:
        return args.func(args)
    except ValueError as exc:
        print(f"metarobot: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
