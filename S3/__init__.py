"""Sprint 3: news and tweet sentiment per candle, without look-ahead (see S3/README.md).

Library modules (scripts: news.py, classify.py, train_classifier.py, sentiment.py, evaluate.py):

- :mod:`S3.config`      -- frozen, validated configuration read from ``S3/sentiment.yaml``
- :mod:`S3.items`       -- the news-item schema, normalisation, de-duplication, atomic append, file import
- :mod:`S3.fetch`       -- HTTP GET with timeouts, size cap and bounded retries (tenacity)
- :mod:`S3.sources`     -- RSS/Atom, CryptoPanic, X recent search, CSV/Parquet; ``ingest()``
- :mod:`S3.labels`      -- labels, the classifier result frame, accuracy / macro-F1 / confusion matrix
- :mod:`S3.lexicon`     -- VADER + crypto lexicon classifier
- :mod:`S3.trained_model` -- TF-IDF + logistic regression: train, cross-validate, save, load
- :mod:`S3.llm`         -- OpenAI-compatible LLM classifier (batched, cached, validated, injection-safe)
- :mod:`S3.classifiers` -- ``--classifier`` specs -> classifier
- :mod:`S3.series`      -- the decayed, confidence-weighted sentiment_score per candle
- :mod:`S3.pipeline`    -- fetch -> classify -> aggregate -> data/sentiment_<interval>.parquet
- :mod:`S3.local.llm`, :mod:`S3.local.news` -- local servers speaking the real protocols (tests, offline)
"""
