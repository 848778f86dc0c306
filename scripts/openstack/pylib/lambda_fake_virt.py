"""Nova compute driver for the test OpenStack: Nova's own FakeDriver (no VMs; instances go
ACTIVE at once; reports 1000 vCPUs / 800 GB RAM / 600 TB disk, so tests never run out of
capacity) whose snapshot also uploads data.

The stock FakeDriver.snapshot() uploads nothing, so an image made with the server action
`createImage` stays `queued` forever. Here it uploads 64 KiB of zeros (raw/bare), and the image
goes queued -> saving -> active like on a real cloud.

Nova loads compute drivers only as `nova.virt.<compute_driver>`, so run.py registers this
module as `nova.virt.lambda_fake_virt` before nova-compute starts.
"""
import io
import time

from nova.image import glance
from nova.virt import fake

SNAPSHOT_BYTES = 64 * 1024


class SnapshotFakeDriver(fake.FakeDriver):
    def get_host_uptime(self):
        # GET /os-hypervisors/detail (compute >= 2.88) and /os-hypervisors/{id}/uptime ask the
        # compute host for this; the stock fake driver raises NotImplementedError
        with open('/proc/uptime') as f:
            up = float(f.read().split()[0])
        with open('/proc/loadavg') as f:
            load = f.read().split()[:3]
        return ' %s up %d days, %d:%02d,  1 user,  load average: %s' % (
            time.strftime('%H:%M:%S'), up // 86400, up % 86400 // 3600, up % 3600 // 60,
            ', '.join(load))

    def snapshot(self, context, instance, image_id, update_task_state):
        # the parent moves the task state through image_pending_upload / image_uploading
        super().snapshot(context, instance, image_id, update_task_state)
        glance.API().update(context, image_id,
                            {'disk_format': 'raw', 'container_format': 'bare'},
                            data=io.BytesIO(b'\0' * SNAPSHOT_BYTES), purge_props=False)
