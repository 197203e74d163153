"""ImageNet's per-channel statistics, the one copy that the models (``graphs.models.pretrained``) and the
data loaders (``datasets``) share: torchvision's and timm's values (``timm.data.constants``), written here
because importing timm loads torchvision and timm's model zoo, seconds at every start."""

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)
