"""Model building blocks: backbones (plain PyTorch), necks and plug-ins."""
