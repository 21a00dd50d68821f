"""Benchmarks: they measure and print figures; they assert nothing about speed.

Every server a bench starts runs without the answer cache: the load generator cycles through a fixed
set of texts, which the cache would answer after the first round, and the peers compared have none.
And it runs the fp32 graph unless the bench asks for int8 (`--variant int8`): the peers run
model.onnx, and a comparison holds only on the same graph. A server of another commit that has no
such setting ignores the variable.
"""

import os

os.environ.setdefault("SENTIMENT_CACHE_ENTRIES", "0")
os.environ.setdefault("SENTIMENT_VARIANT", "fp32")
