"""Start an OpenStack program from its Python module, as its console script would:

    /usr/bin/python3 run.py PROGRAM [ARGS...]

The project installs only the python3-<service> library packages: the service packages
(nova-api, glance-api, neutron-server, ...) that ship the /usr/bin entry points also ask debconf
questions, run dbconfig-common and start daemons. keystone-manage, placement-manage and the
keystone/placement WSGI files do come with the library packages and are used directly.

Two programs get a little more:
  nova-compute    the compute driver lambda_fake_virt.SnapshotFakeDriver (pylib/) is registered
                  as nova.virt.lambda_fake_virt, the only namespace Nova loads drivers from;
  neutron-server  pylib/ is on sys.path (its dist-info declares the ML2 mechanism driver
                  `lambda_loopback`), and the SQLAlchemy mappers are configured before serving:
                  neutron 21.0.0 otherwise answers GET /v2.0/ports with 500 "type object 'Port'
                  has no attribute 'port_forwardings'" until some other query configured them.
"""
import importlib
import os
import sys

PYLIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'pylib')

PROGRAMS = {
    'nova-manage': 'nova.cmd.manage',
    'nova-conductor': 'nova.cmd.conductor',
    'nova-scheduler': 'nova.cmd.scheduler',
    'nova-compute': 'nova.cmd.compute',
    'glance-manage': 'glance.cmd.manage',
    'glance-api': 'glance.cmd.api',
    'neutron-db-manage': 'neutron.db.migration.cli',
    'neutron-server': 'neutron.cmd.eventlet.server',
}


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in PROGRAMS:
        sys.exit('usage: run.py {%s} [args...]' % '|'.join(sorted(PROGRAMS)))
    program = sys.argv.pop(1)
    sys.argv[0] = program
    sys.path.insert(0, PYLIB)
    # importing the command module first: the eventlet services monkey-patch on import
    module = importlib.import_module(PROGRAMS[program])
    if program == 'nova-compute':
        import lambda_fake_virt
        sys.modules['nova.virt.lambda_fake_virt'] = lambda_fake_virt
    elif program == 'neutron-server':
        from neutron.db.migration.models import head  # noqa: F401 (imports every model)
        from sqlalchemy import orm
        orm.configure_mappers()
    return module.main()


if __name__ == '__main__':
    sys.exit(main())
