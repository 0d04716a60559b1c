"""`model` → `product` (NVIDIA's term, `nvidia.com/gpu.product`): a rename, the data stays."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("gpus", "0001_initial"),
    ]

    operations = [
        migrations.RenameField(model_name="gpu", old_name="model", new_name="product"),
        migrations.RenameField(model_name="gpuprice", old_name="model", new_name="product"),
        migrations.AlterModelOptions(name="gpuprice", options={"ordering": ["product"]}),
    ]
