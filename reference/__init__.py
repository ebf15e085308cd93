"""Reference implementations the project is checked and measured against: PyTorch mirrors of the
published models and of criss-cross attention, and mmsegmentation's own CCNet."""
