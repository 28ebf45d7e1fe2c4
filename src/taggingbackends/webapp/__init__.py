"""The browser app of `tagging-backend view`: review, correct, save and retrain tags."""
