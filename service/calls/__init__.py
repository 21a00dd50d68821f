"""What each call means, for both doors: sentiment.v1, KServe v2 and the repository extension, their
validation, the one error table, and call observation written once."""
