"""Label a headline file with a sentiment classifier.

    python S3/classify.py --input headlines.csv --classifier lexicon --out labelled.parquet
    python S3/classify.py --input headlines.csv --classifier local:sentiment_tfidf_lr --out out.parquet
    python S3/classify.py --input headlines.csv --classifier openai --out out.parquet

The input is a CSV or Parquet with a headline/title column (data/news_items.parquet
works too). When it has a ``label`` column (1/0/-1) the script prints accuracy,
macro-F1 and the confusion matrix; the true labels are kept as ``true_label``.
"""

from __future__ import annotations

from pathlib import Path

from S1.cli import main_entry
from S1.errors import UserError
from S3.cli_common import parser, quiet_http_logs


def main(argv=None) -> int:
    p = parser("label headlines bullish / neutral / bearish")
    p.add_argument("--input", required=True, help="CSV or Parquet with a headline or title column")
    p.add_argument("--classifier", default="auto", help="lexicon | local:PATH | openai | auto (default)")
    p.add_argument("--out", required=True, help="output Parquet (or .csv)")
    args = p.parse_args(argv)
    quiet_http_logs()
    from S1.datasets import atomic_write_text, csv_text, write_parquet
    from S3.classifiers import classify_frame, get_classifier, resolve_spec
    from S3.config import load_config
    from S3.items import read_headlines
    from S3.labels import evaluate, parse_true_labels

    out = Path(args.out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise UserError(f"--out {out} must end in .parquet or .csv", "e.g. --out data/labelled.parquet")
    config = load_config(args.config)
    df = read_headlines(Path(args.input), need_date=False, date_only=config.items.date_only)
    if not len(df):
        raise UserError(f"{args.input} holds no headline (a header and no rows?); {out} was not written",
                        "pass a file with at least one headline row")
    truth = None
    if "label" in df.columns:
        truth = parse_true_labels(df["label"])
        df = df.drop(columns=["label"]).assign(true_label=truth.to_numpy())
    spec = resolve_spec(args.classifier)
    clf = get_classifier(spec, config=config)
    res = classify_frame(df, clf)
    if out.suffix.lower() == ".csv":
        atomic_write_text(out, csv_text(res, index=False))   # a headline never runs as a spreadsheet formula
    else:
        write_parquet(res, out, metadata={"kind": "sentiment_labels", "classifier": spec, "input": args.input})
    print(f"{len(res)} headline(s) labelled with {spec} -> {out}")
    print("labels: " + ", ".join(f"{k} {v}" for k, v in res["label"].value_counts().items()))
    if getattr(clf, "usage", None) is not None:
        print(clf.usage.summary())
    if truth is not None:
        print(evaluate(truth.to_numpy(), res["label"].tolist()).text())
    return 0


if __name__ == "__main__":
    main_entry(main)
