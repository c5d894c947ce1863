"""``python -m mmvision_ssm.demo [ROOT] [--seed S]``: write the demo dataset."""
import argparse

from .shapes import generate_demo_data

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument('root', nargs='?', default='data/demo')
parser.add_argument('--seed', type=int, default=0)
parser.add_argument('--num-train', type=int, default=240)
parser.add_argument('--num-val', type=int, default=60)
parser.add_argument('--size', type=int, default=256)
args = parser.parse_args()
generate_demo_data(args.root, args.num_train, args.num_val, args.size, args.seed)
print(f'demo data written to {args.root}')
