"""Benchmarks: they measure and print figures; they assert nothing about speed."""
