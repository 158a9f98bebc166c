"""Generation: engines, presets, the GPU memory planner and GPU inventory."""
