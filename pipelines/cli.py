"""`mianshen …`: the command line for people and automation.

Thin on purpose: each subcommand parses its arguments and calls one stage
function; the DAGs call the same functions. Stage modules are imported inside
the handlers so that `mianshen --help` stays fast (Airflow and GX are heavy).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

from pipelines.config import load_settings


def _date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"日期格式应为 YYYY-MM-DD：{text!r}") from None


def _hold(text: str) -> tuple[str, str]:
    from pipelines.orchestration import parse_hold

    try:
        return parse_hold(text)
    except ValueError as bad:
        raise argparse.ArgumentTypeError(str(bad)) from None


def _print(obj) -> None:
    print(json.dumps(obj, ensure_ascii=False, indent=2, default=str))


def cmd_demo_data(args) -> int:
    from pipelines import demo_data

    if args.answers:
        if not args.inbox:
            raise SystemExit("--answers 需要 --inbox")
        _print(demo_data.write_answers(Path(args.inbox), load_settings().run_dir(args.as_of), args.seed))
        return 0
    if not args.out:
        raise SystemExit("需要 --out（交付数据的落地目录）")
    summary = demo_data.generate(
        Path(args.out), args.as_of, args.enterprises, args.seed,
        defect_share=args.defects, inbox=Path(args.inbox) if args.inbox else None,
    )
    _print(summary)
    return 0


def cmd_run(args) -> int:
    from pipelines import nightly, validate

    settings = load_settings()
    meter = nightly.StageMeter() if args.timings else None
    try:
        summary = nightly.run(settings, args.as_of, accept_drift=args.accept_drift,
                              release_holds=tuple(args.release_hold), meter=meter)
    except validate.GateClosed as closed:
        print(f"运行已在数据闸门处停止（{args.as_of}）：\n{closed}", file=sys.stderr)
        return 2
    if meter is not None:
        from pipelines.files import atomic_write_json

        atomic_write_json(Path(args.timings), {"stages": meter.stages, "match_results": summary["match"]["rows"]})
    _print(summary)
    return 0


def cmd_stage(args) -> int:
    from pipelines import ingest, nightly, portrait, validate

    settings = load_settings()
    if args.stage == "ingest":
        _print(ingest.ingest_feed(settings, args.feed, args.as_of))
    elif args.stage == "validate":
        _print(validate.validate_feed(settings, args.feed, args.as_of, accept_drift=args.accept_drift))
    elif args.stage == "gate":
        try:
            _print(nightly.quality_gate(settings, args.as_of))
        except validate.GateClosed as closed:
            print(str(closed), file=sys.stderr)
            return 2
    elif args.stage == "portrait":
        print(portrait.build(settings, args.as_of))
    elif args.stage == "match":
        _print(nightly.match_policies(settings, args.as_of))
    return 0


def cmd_policies_check(args) -> int:
    from pipelines import policies

    return policies.check_command(Path(args.dir) if args.dir else load_settings().policies)


def cmd_explain(args) -> int:
    from pipelines import explain

    print(explain.explain_command(load_settings(), args.uscc, args.policy_id, args.as_of))
    return 0


def cmd_namelist_check(args) -> int:
    from pipelines import namelist

    return namelist.namelist_check_command(
        Path(args.file), args.policy, registry_path=Path(args.registry) if args.registry else None,
        as_json=args.json, settings=load_settings(),
    )


def cmd_inbox_process(args) -> int:
    from pipelines import inbox

    return inbox.inbox_process_command(load_settings(), settle_seconds=args.settle_seconds)


def cmd_ledger_release(args) -> int:
    from pipelines import ledger

    settings = load_settings()
    policy_id, period = args.hold
    print(ledger.release_hold_command(settings, policy_id, period, args.operator))
    return 0


def cmd_ledger_status(args) -> int:
    from pipelines import ledger

    print(ledger.status_command(load_settings(), args.policy, args.uscc, args.json))
    return 0


def cmd_supervision(args) -> int:
    import json

    from pipelines import oversight

    result = oversight.command(load_settings(), args.as_of)
    if args.json:
        print(json.dumps(result, ensure_ascii=False, indent=2))
    else:
        print(oversight.table(result))
    return 0


def cmd_simulate(args) -> int:
    from pipelines import sandbox

    return sandbox.simulate_command(load_settings(), args.draft, as_of=args.as_of, as_json=args.json)


def cmd_effects(args) -> int:
    from pipelines import effects

    return effects.effects_command(load_settings(), as_of=args.as_of)


def cmd_where(args) -> int:
    settings = load_settings()
    run_dir = settings.run_dir(args.as_of)
    print(f"本次运行（{args.as_of}）的结果在：{run_dir}")
    for path, label in ((settings.quality_dir(args.as_of), "数据质量"), (settings.matches_path(args.as_of), "政策匹配结果"),
                        (run_dir / "sms", "短信待发清单"), (run_dir / "review", "部门审核表"),
                        (run_dir / "publicity", "公示名单"), (run_dir / "payout", "拨付清单"),
                        (run_dir / "supervision", "事后监管清单"),
                        (settings.reminders_dir(args.as_of), "提醒清单（应享未享、差一项、数据缺口）"),
                        (settings.lists_dir(args.as_of), "惠企政策清单、办事指南清单"), (settings.report_path(args.as_of), "运行报告")):
        # review, publicity and payout lists appear once enterprises confirm and departments approve
        print(f"  {'✓' if path.exists() else '·'} {label}：{path if path.exists() else '本次运行无此清单'}")
    print(f"数据仓库：{settings.warehouse_url}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mianshen", description="卧龙区惠企政策“免申即享”数据流水线")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo-data", help="生成示例数据（各部门交付目录）")
    p.add_argument("--out", help="landing folder to write the deliveries into")
    p.add_argument("--as-of", type=_date, required=True)
    p.add_argument("--enterprises", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--defects", type=float, default=0.02, help="share of defective rows per feed")
    p.add_argument("--inbox", help="also drop sample name-list workbooks into this inbox")
    p.add_argument("--answers", action="store_true",
                   help="instead: drop the confirmations and reviews answering output/<as-of>'s lists into --inbox")
    p.set_defaults(fn=cmd_demo_data)

    p = sub.add_parser("run", help="运行完整的夜间流水线")
    p.add_argument("--as-of", type=_date, required=True)
    p.add_argument("--accept-drift", action="store_true", help="本次运行接受数据量波动超限")
    p.add_argument("--release-hold", type=_hold, action="append", default=[],
                   help="解除超预算暂停拨付：政策编号:期次（可重复）")
    p.add_argument("--timings", help="把各阶段耗时与内存峰值写入此 JSON 文件（基准测试用）")
    p.set_defaults(fn=cmd_run)

    for stage in ("ingest", "validate"):
        p = sub.add_parser(stage)
        p.add_argument("--feed", required=True)
        p.add_argument("--as-of", type=_date, required=True)
        p.add_argument("--accept-drift", action="store_true")
        p.set_defaults(fn=cmd_stage, stage=stage)
    for stage in ("gate", "portrait", "match"):
        p = sub.add_parser(stage)
        p.add_argument("--as-of", type=_date, required=True)
        p.set_defaults(fn=cmd_stage, stage=stage)

    p = sub.add_parser("policies", help="政策条件库")
    psub = p.add_subparsers(dest="action", required=True)
    c = psub.add_parser("check", help="检查政策文件")
    c.add_argument("dir", nargs="?")
    c.set_defaults(fn=cmd_policies_check)

    p = sub.add_parser("explain", help="解释某企业对某政策的匹配结果")
    p.add_argument("uscc")
    p.add_argument("policy_id")
    p.add_argument("--as-of", type=_date)
    p.set_defaults(fn=cmd_explain)

    p = sub.add_parser("namelist", help="名单预检")
    nsub = p.add_subparsers(dest="action", required=True)
    c = nsub.add_parser("check")
    c.add_argument("file")
    c.add_argument("--policy", required=True)
    c.add_argument("--registry")
    c.add_argument("--json", action="store_true")
    c.set_defaults(fn=cmd_namelist_check)

    p = sub.add_parser("inbox", help="收件箱")
    isub = p.add_subparsers(dest="action", required=True)
    c = isub.add_parser("process", help="处理收件箱中的新文件（每个文件按内容只处理一次）")
    c.add_argument("--settle-seconds", type=int, default=60,
                   help="files modified more recently than this may still be copying and wait for the next pass")
    c.set_defaults(fn=cmd_inbox_process)

    p = sub.add_parser("ledger", help="台账")
    lsub = p.add_subparsers(dest="action", required=True)
    c = lsub.add_parser("release-hold", help="解除超预算暂停拨付")
    c.add_argument("hold", type=_hold)
    c.add_argument("--operator", required=True)
    c.set_defaults(fn=cmd_ledger_release)
    c = lsub.add_parser("status", help="查看台账记录（状态、金额、批次、最近变更及原因）")
    c.add_argument("--policy", help="政策编号")
    c.add_argument("--uscc", help="统一社会信用代码")
    c.add_argument("--json", action="store_true", help="以 JSON 输出（供脚本使用）")
    c.set_defaults(fn=cmd_ledger_status)

    p = sub.add_parser("supervision", help="督导统计：按台账及其变更记录重算某日的统计")
    p.add_argument("--as-of", type=_date, required=True, help="统计截止日期 YYYY-MM-DD")
    p.add_argument("--json", action="store_true", help="输出 JSON（与当日运行写出的 oversight/督导统计.json 相同）")
    p.set_defaults(fn=cmd_supervision)

    p = sub.add_parser("simulate", help="政策沙盘：测算政策草案的覆盖面与成本")
    p.add_argument("draft", help="政策草案 YAML 文件")
    p.add_argument("--as-of", type=_date)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_simulate)

    p = sub.add_parser("effects", help="绩效评价：已兑现政策的效果分析（描述性）")
    p.add_argument("--as-of", type=_date)
    p.set_defaults(fn=cmd_effects)

    p = sub.add_parser("where", help="显示某次运行的结果位置")
    p.add_argument("--as-of", type=_date, required=True)
    p.set_defaults(fn=cmd_where)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from pipelines import safety

    for handler in logging.getLogger().handlers:
        safety.mask_logger(handler)  # phone numbers never reach a log in clear
    args = build_parser().parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
