"""Config schemas (pydantic sections) for every task. Plain data: nothing here touches files."""
