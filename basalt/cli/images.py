"""`basalt image ...`: disk images for volumes."""

from __future__ import annotations

import argparse

from ..progress import Progress, human_bytes
from .common import admin_client, emit, emit_table, s3_errors_name

IMAGE_COLUMNS = [
    ("NAME", lambda i: i["name"], False),
    ("SIZE", lambda i: human_bytes(i["size"]), True),
    ("FORMAT", lambda i: i.get("format"), False),
    ("VOLUMES", lambda i: ",".join(i.get("volumes") or []), False),
]


def cmd_image(args: argparse.Namespace) -> int:
    """Disk images, stored as objects in the basalt-images bucket."""
    from .. import images
    client = admin_client(args)
    what = args.source if args.action == "import" else f"image {args.name}" \
        if args.action == "delete" else None
    with s3_errors_name(what):
        if args.action == "list":
            return emit_table(args, images.list_images(client), IMAGE_COLUMNS)
        if args.action == "delete":
            result = images.delete_image(client, args.name)
            return emit(args, dict({"name": args.name, "deleted": True}, **(result or {})),
                        f"deleted image {args.name}")
        image = images.import_image(client, args.source, args.name, Progress(),
                                    replace=args.replace)
    return emit(args, image, f"imported {args.source} as image {args.name} "
                f"({image.get('format', 'raw')}, {human_bytes(image['size'])})")


def register(sub, add) -> None:
    p = add(sub, "image", help="disk images for volumes")
    isub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    p.set_defaults(func=cmd_image)
    i = add(isub, "import", help="store a raw or qcow2 image (a file or s3://...)")
    i.add_argument("source", metavar="FILE|s3://BUCKET/KEY")
    i.add_argument("name")
    i.add_argument("--replace", action="store_true",
                   help="replace an image of that name (refused otherwise)")
    add(isub, "list", help="list images")
    add(isub, "delete", help="delete an image (refused while volumes use it)").add_argument("name")
