"""Analysis tools: model complexity (params, FLOPs) and implicit-knowledge inspection."""
