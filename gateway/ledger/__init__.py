"""The yearly export ledger: distinct subjects per organisation, category and year."""
