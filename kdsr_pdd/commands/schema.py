"""JSON schemas of the option files for editors: ``kdsr-pdd schema [MODEL_TYPE ...] [--out DIR]``.

One file per model type, ``<MODEL_TYPE>.json`` (default: every model of the plugin and the BasicSR models
its option files use), generated from the typed option schemas. ``options/schemas/`` holds them for the
shipped models; a YAML file names its schema for editors that read the yaml-language-server comment, e.g.
``# yaml-language-server: $schema=../../schemas/KDSRStudentModel.json``.
"""
import json
import os
import sys

from kdsr_pdd.commands.cli import CommandParser, fail

SHIPPED = ('KDSRTeacherModel', 'KDSRStudentModel', 'KDSRNetTeacherModel', 'KDSRNetStudentModel', 'KDSRGANModel',
           'PDDModel', 'SRModel', 'RealESRNetModel_basicsr')


def build_parser():
    parser = CommandParser('schema', description=__doc__.split('\n')[0])
    parser.add_argument('model_types', nargs='*', default=list(SHIPPED), metavar='MODEL_TYPE',
                        help='registered model types (default: %(default)s)')
    parser.add_argument('-o', '--out', '--output',
                        help='write <out>/<MODEL_TYPE>.json (default: print one schema to stdout)')
    return parser


def main(argv=None):
    args = build_parser().parse_args(argv)
    import kdsr_pdd.plugin  # noqa: F401  (registers the models, their schemas and datasets)
    from kdsr_pdd.schema import options_json_schema

    try:
        documents = {name: options_json_schema(name) for name in args.model_types}
    except ValueError as err:
        fail(err)
    if not args.out:
        if len(documents) != 1:
            fail('give one MODEL_TYPE to print, or --out DIR for several')
        print(json.dumps(next(iter(documents.values())), indent=1))
        return 0
    os.makedirs(args.out, exist_ok=True)
    for name, document in documents.items():
        with open(os.path.join(args.out, f'{name}.json'), 'w', encoding='utf-8') as f:
            json.dump(document, f, indent=1)
            f.write('\n')
    print(f'wrote {len(documents)} schemas to {args.out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
