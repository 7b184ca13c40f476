"""Measure the offline classifiers on a labelled headline file (the README figures).

    python S3/evaluate.py --labels ../shared/data/sentiment/cryptolin_dev.csv

Lexicon: neutral band tuned on a stratified half (seed 0), figures on the other
half, with plain VADER and the majority class as baselines. Trained model:
stratified k-fold cross-validation.
"""

from __future__ import annotations

from pathlib import Path

from S1.cli import main_entry
from S1.errors import UserError
from S3.cli_common import parser


def main(argv=None) -> int:
    p = parser("evaluate the lexicon and the trained model on a labelled CSV")
    p.add_argument("--labels", required=True, help="CSV with headline and label (1/0/-1) columns")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-model", action="store_true", help="lexicon only (faster)")
    args = p.parse_args(argv)
    from S3.evaluation import evaluate_lexicon, evaluate_model, majority_baseline
    from S3.items import read_headlines
    from S3.labels import parse_true_labels

    df = read_headlines(Path(args.labels), need_date=False)
    if "label" not in df.columns:
        raise UserError(f"{args.labels} has no label column", "add a label column with 1, 0 or -1")
    y = parse_true_labels(df["label"]).to_numpy()
    texts = df["title"].tolist()
    lex = evaluate_lexicon(texts, y, seed=args.seed)
    rows = [("majority class (all rows)", majority_baseline(y)),
            ("plain VADER ±0.05 (held-out half)", lex.heldout_vader),
            (f"lexicon, band tuned on the other half {lex.tuned_thresholds} (held-out half)", lex.heldout_tuned),
            ("lexicon, band of crypto_lexicon.yaml (held-out half)", lex.heldout_configured),
            ("lexicon, band of crypto_lexicon.yaml (all rows; half of them tuned it)", lex.full_configured)]
    if not args.skip_model:
        m, per_fold = evaluate_model(texts, y, folds=args.folds, seed=args.seed)
        rows.append((f"TF-IDF + logistic regression, {args.folds}-fold CV "
                     f"(fold macro-F1 {min(per_fold):.3f}..{max(per_fold):.3f})", m))
    print(f"{args.labels}: {len(y)} rows")
    print("| classifier | n | accuracy | macro-F1 |\n|---|---|---|---|")
    for name, m in rows:
        print(f"| {name} | {m.n} | {m.accuracy:.3f} | {m.macro_f1:.3f} |")
    for name, m in rows[2:]:
        print(f"\n{name}\n{m.text()}")
    return 0


if __name__ == "__main__":
    main_entry(main)
