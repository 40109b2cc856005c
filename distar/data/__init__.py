"""The data layer: the prompt files the package ships (Parti, a COCO caption sample; their
licences in ``README.md``) and ``prompts``, which reads them, downloads the rest on request, and
draws a text world's training prompts. Torch-free."""
