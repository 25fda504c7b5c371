"""IR passes: plain ``Node -> Node`` (or ruleset -> ruleset) functions, one per module."""
