"""Helpers for the tests and benchmarks, never for the stages (like transformers.testing_utils):

stub_openai    a scripted OpenAI-compatible chat endpoint on 127.0.0.1 (judge tests, bench_judge)
filter_oracle  generated magpie-shaped corpora and the naive reference filter (filter tests, bench_filter)
"""
