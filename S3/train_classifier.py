"""Train the local sentiment model (TF-IDF word+char n-grams + logistic regression).

    python S3/train_classifier.py --labels ../shared/data/sentiment/cryptolin_dev.csv
    python S3/train_classifier.py --labels my_labels.csv --name my_model --folds 10 --C 2.0

then score with the trained model:

    python S3/classify.py --input news.csv --classifier local:sentiment_tfidf_lr --out out.parquet

Any CSV with ``headline,label`` columns (label 1/0/-1) works. The script prints
stratified k-fold cross-validated figures, then fits on all rows and saves
``data/models/<name>.joblib`` plus a ``.json`` card (data hash, CV figures, versions).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from S1.cli import main_entry
from S1.errors import UserError
from S3.cli_common import parser


def main(argv=None) -> int:
    p = parser("train the local sentiment classifier from a labelled CSV")
    p.add_argument("--labels", required=True, help="CSV with headline (or title) and label (1/0/-1) columns")
    p.add_argument("--name", default=None,
                   help="model file name or path (default data/models/sentiment_tfidf_lr.joblib)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds (0: skip CV)")
    p.add_argument("--C", type=float, default=1.0, help="inverse regularisation of the logistic regression")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    from S1.datasets import models_dir
    from S3.items import read_headlines
    from S3.labels import parse_true_labels
    from S3.trained_model import DEFAULT_NAME, cross_validate, save_model, train

    if args.folds == 1 or args.folds < 0:
        raise UserError(f"--folds {args.folds} is not possible", "use 0 (no CV) or 2 and more")
    if args.C <= 0:
        raise UserError("--C must be positive", "e.g. --C 1")
    labels_path = Path(args.labels)
    df = read_headlines(labels_path, need_date=False)
    if "label" not in df.columns:
        raise UserError(f"{labels_path} has no label column", "add a label column with 1, 0 or -1")
    y = parse_true_labels(df["label"]).to_numpy()
    texts = df["title"].tolist()
    if len(texts) < 30:
        raise UserError(f"{labels_path} has only {len(texts)} labelled rows", "use at least a few hundred")
    card = {"labels_file": str(labels_path), "rows": len(texts),
            "labels_sha256": hashlib.sha256(labels_path.read_bytes()).hexdigest(),
            "class_counts": {str(k): int((y == k).sum()) for k in (-1, 0, 1)},
            "model": "tfidf word(1-2)+char_wb(2-5) + LogisticRegression(class_weight=balanced)",
            "C": args.C, "seed": args.seed}
    if args.folds:
        metrics, per_fold = cross_validate(texts, y, folds=args.folds, seed=args.seed, C=args.C)
        print(f"{args.folds}-fold cross-validation on {len(texts)} rows (out-of-fold predictions):")
        print(metrics.text())
        print("macro-F1 per fold: " + ", ".join(f"{f:.3f}" for f in per_fold))
        card["cv"] = {"folds": args.folds, "accuracy": metrics.accuracy, "macro_f1": metrics.macro_f1,
                      "macro_f1_per_fold": per_fold}
    model = train(texts, y, C=args.C, seed=args.seed)
    if args.name is None:
        path = models_dir() / f"{DEFAULT_NAME}.joblib"
    else:
        path = Path(args.name)
        if path.parent == Path("."):
            path = models_dir() / (path.name if path.suffix else f"{path.name}.joblib")
    save_model(model, path, card=card)
    print(f"model saved -> {path} (use --classifier local:{path})")
    return 0


if __name__ == "__main__":
    main_entry(main)
