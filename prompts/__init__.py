"""rsrag.prompts: prompt templates as versioned files."""
