"""The embedded CPU shape (DESIGN.md §5): a small local trainer loop around real vLLM servers."""
