"""Measure the sentiment classifiers -- the LLM included -- on a labelled headline file.

    # the README figures (lexicon band tuned on one half, scored on the other; trained model CV)
    python S3/evaluate.py --labels ../shared/data/sentiment/cryptolin_dev.csv

    # one table for any classifiers on the same rows, + reports/sentiment_eval_<classifier>_<date>.html/.json
    python S3/evaluate.py --labels ../shared/data/sentiment/cryptolin_dev.csv --classifier llm --limit 100 --estimate
    python S3/evaluate.py --labels ../shared/data/sentiment/cryptolin_dev.csv --classifier llm --limit 100
    python S3/evaluate.py --labels ../shared/data/sentiment/cryptolin_dev.csv --classifier all --model gpt-4o-mini

``--classifier`` takes majority, vader, lexicon, trained, llm, a comma list of them, or
``all`` (the four offline ones, plus llm when OPENAI_API_KEY is set or OPENAI_BASE_URL is
a local server). ``--limit N`` evaluates a stratified sample of exactly N rows
(``--sample-seed``); the LLM verdict cache makes a re-run of the same sample free.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from S1.cli import main_entry
from S1.errors import UserError
from S3.cli_common import parser, quiet_http_logs


def _readme_figures(args, texts, y) -> int:
    from S3.evaluation import evaluate_lexicon, evaluate_model, majority_baseline

    lex = evaluate_lexicon(texts, y, seed=args.seed)
    rows = [("majority class (all rows)", majority_baseline(y)),
            ("plain VADER ±0.05 (held-out half)", lex.heldout_vader),
            (f"lexicon, band tuned on the other half {lex.tuned_thresholds} (held-out half)", lex.heldout_tuned),
            ("lexicon, band of crypto_lexicon.yaml (held-out half)", lex.heldout_configured),
            ("lexicon, band of crypto_lexicon.yaml (all rows; half of them tuned it)", lex.full_configured)]
    if not args.skip_model:
        m, per_fold = evaluate_model(texts, y, folds=args.folds, seed=args.seed)
        name = (f"TF-IDF + logistic regression, {args.folds}-fold CV "
                f"(fold macro-F1 {min(per_fold):.3f}..{max(per_fold):.3f})")
        rows.append((name, m))
    print(f"{args.labels}: {len(y)} rows")
    print("| classifier | n | accuracy | macro-F1 |\n|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m.n} | {m.accuracy:.3f} | {m.macro_f1:.3f} |")
    for name, m in rows[2:]:
        print(f"\n{name}\n{m.text()}")
    return 0


def _choose(spec: str, settings) -> tuple[list[str], str | None]:
    from S3.evaluation import CLASSIFIERS, OFFLINE
    from S3.llm import _is_local

    if spec == "all":
        if settings.openai_api_key is not None or _is_local(settings.openai_base_url):
            return [*OFFLINE, "llm"], None
        return list(OFFLINE), "llm left out: OPENAI_API_KEY is not set and OPENAI_BASE_URL is not a local server"
    names = [s.strip() for s in spec.split(",") if s.strip()]
    bad = [n for n in names if n not in CLASSIFIERS]
    if bad or not names:
        raise UserError(f"unknown classifier {', '.join(bad) or spec!r}",
                        f"use {', '.join(CLASSIFIERS)}, a comma list of them, or all")
    return list(dict.fromkeys(names)), None


def main(argv=None) -> int:
    p = parser("evaluate the sentiment classifiers (lexicon, trained model, LLM ...) on a labelled CSV")
    p.add_argument("--labels", required=True, help="CSV with headline and label (1/0/-1) columns")
    p.add_argument("--classifier", default=None,
                   help="majority|vader|lexicon|trained|llm, a comma list, or all; "
                        "without it: the README figures (held-out half, CV), no report")
    p.add_argument("--model", default=None, help="LLM model (default OPENAI_MODEL)")
    p.add_argument("--prompt", default=None, help="LLM prompt: a name in S3/prompts/ or a YAML path "
                                                  "(default llm.prompt of the config)")
    p.add_argument("--limit", type=int, default=None, help="evaluate a stratified sample of exactly N rows")
    p.add_argument("--sample-seed", type=int, default=0, help="seed of the --limit sample")
    p.add_argument("--estimate", action="store_true", help="print the LLM token and cost estimate and exit")
    p.add_argument("--out", default=None, help="HTML report path (JSON beside it); default "
                                               "reports/sentiment_eval_<classifier>_<date>.html")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0, help="seed of the lexicon split and the CV folds")
    p.add_argument("--skip-model", action="store_true", help="README figures without the trained model (faster)")
    args = p.parse_args(argv)
    from S3.items import read_headlines
    from S3.labels import parse_true_labels

    path = Path(args.labels)
    df = read_headlines(path, need_date=False)
    if "label" not in df.columns:
        raise UserError(f"{args.labels} has no label column", "add a label column with 1, 0 or -1")
    y = parse_true_labels(df["label"]).to_numpy()
    texts = df["title"].tolist()
    if args.classifier is None:
        if args.estimate or args.limit is not None or args.model or args.prompt:
            raise UserError("--estimate, --limit, --model and --prompt need --classifier",
                            "add e.g. --classifier llm (or all)")
        return _readme_figures(args, texts, y)
    if args.limit is not None and not 1 <= args.limit:
        raise UserError(f"--limit {args.limit} must be at least 1", "pass a positive number of rows")
    if args.limit is not None and args.limit > len(y):
        raise UserError(f"--limit {args.limit} is more than the {len(y)} rows of {args.labels}",
                        f"use at most {len(y)}, or drop --limit")
    return run(args, path, texts, y)


def run(args, path: Path, texts, y) -> int:
    from S1.settings import get_settings
    from S3.config import load_config
    from S3.eval_report import eval_report_path, table_text, write_report
    from S3.evaluation import evaluate_classifier, stratified_sample

    settings = get_settings()
    names, note = _choose(args.classifier, settings)
    if note:
        print(note)
    rows = stratified_sample(y, args.limit, seed=args.sample_seed)
    how = (f"stratified sample of {len(rows)}, seed {args.sample_seed}" if len(rows) < len(y) else "all rows")
    clf = None
    if "llm" in names:
        from S3.llm import OpenAIClassifier
        from S3.llm_prompt import load_prompt

        cfg = load_config(args.config).llm
        quiet_http_logs()
        clf = OpenAIClassifier(settings=settings, config=cfg, model=args.model,
                               prompt=load_prompt(args.prompt or cfg.prompt), progress=True)
    if args.estimate:
        if clf is None:
            raise UserError("--estimate is for the LLM (the offline classifiers cost nothing)",
                            "add llm to --classifier")
        from S3.llm_estimate import estimate_classifier

        print(estimate_classifier(clf, [texts[i] for i in rows]).text())
        return 0
    results = []
    for name in names:
        t0 = time.perf_counter()
        results.append(evaluate_classifier(name, texts, y, rows, folds=args.folds, seed=args.seed,
                                           llm_classifier=clf, base_url=settings.openai_base_url))
        if args.verbose:
            print(f"{name}: {time.perf_counter() - t0:.1f}s")
    slug = args.classifier.replace(",", "-")
    if clf is not None:
        slug += f"-{clf.model}" + (f"-{clf.prompt.name}" if clf.prompt.name != "default" else "")
    date = time.strftime("%Y-%m-%d", time.gmtime())
    report = {"labels_file": str(path), "labels_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
              "rows_total": len(y), "classifier": args.classifier,
              "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "selection": {"n": len(rows), "how": how, "limit": args.limit, "seed": args.sample_seed,
                            "rows": [int(i) for i in rows]},
              "results": [r.as_dict() for r in results]}
    print(table_text(report))
    html_path = Path(args.out) if args.out else eval_report_path(slug, date)
    h, j = write_report(report, html_path)
    print(f"\nwrote {h} and {j}")
    return 0


if __name__ == "__main__":
    main_entry(main)
