"""``python -m yolor_lightning.predict ckpt=PATH source=IMAGE|FOLDER|VIDEO [out=DIR] [conf=0.25]``:
a trained or exported model run on images, drawn and written as COCO JSON.

Parts: :mod:`.sources` (what ``source=`` names), :mod:`.models` (what ``ckpt=`` names),
:mod:`.detections` (letterbox, NMS, back to original pixels), :mod:`.writers` (what lands in
``out``) and :mod:`.pipeline` (:func:`~.pipeline.predict`, the four together).
"""
