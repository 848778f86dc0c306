"""Neutron ML2 mechanism driver for the test OpenStack: binds every port, on any host, to the
network's first segment, without agents, bridges or devices.

Without a mechanism driver that binds, Nova's port binding fails (binding:vif_type =
binding_failed) and a server booted on a network goes to ERROR; the in-tree drivers
(openvswitch, linuxbridge, ...) bind only where a live L2 agent reports in, and OVN needs an OVN
database. Nova's fake virt driver plugs nothing, so a vif type of 'other' is all it needs.

Loaded by ML2 as `mechanism_drivers = lambda_loopback` through the entry point declared in
lambda_openstack_fakes-1.0.dist-info beside this file (run.py puts this folder on sys.path).
"""
from neutron_lib.api.definitions import portbindings
from neutron_lib import constants
from neutron_lib.plugins.ml2 import api


class LoopbackMechanismDriver(api.MechanismDriver):
    def initialize(self):
        pass

    @property
    def connectivity(self):
        # 'l2': may bind ports that have no fixed IP yet
        return portbindings.CONNECTIVITY_L2

    def bind_port(self, context):
        for segment in context.segments_to_bind:
            context.set_binding(segment[api.ID], portbindings.VIF_TYPE_OTHER,
                                {portbindings.CAP_PORT_FILTER: False},
                                status=constants.PORT_STATUS_ACTIVE)
            return
