# VMamba-T Mask R-CNN 1x on COCO: the entry point named in the README; see the file it inherits.
_base_ = ['./vmamba/maskrcnn_vmamba_t_1x_coco.py']
