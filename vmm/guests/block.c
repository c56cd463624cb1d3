/* A minimal virtio-mmio block driver (virtio 1.2 §4.2.3, §5.2): it finds the disk at
 * 0xd0000000, negotiates VERSION_1, sets up one split virtqueue and, through it, reads
 * the disk's id and sector 0, writes sector 1, flushes and reads sector 1 back, printing
 * each result on COM1. Guest memory is identity-mapped, so pointers are guest-physical
 * addresses. */
#include "guest.h"

#define BASE 0xd0000000UL
#define REG(offset) (BASE + (offset))
#define QUEUE_SIZE 8
#define F_NEXT 1
#define F_WRITE 2

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QUEUE_SIZE]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QUEUE_SIZE]; u16 avail_event; };

static struct desc descs[QUEUE_SIZE] __attribute__((aligned(16)));
static struct avail avail __attribute__((aligned(2)));
static struct used used __attribute__((aligned(4)));
static struct { u32 type; u32 reserved; u64 sector; } header;
static u8 data[512];
static u8 status;
static u16 used_seen;

static void fail(const char *why) {
    puts("block: ");
    puts(why);
    putc('\n');
    reset();
}

static void setup(void) {
    if (mmio_read(REG(0x000)) != 0x74726976 || mmio_read(REG(0x004)) != 2)
        fail("no virtio-mmio device");
    if (mmio_read(REG(0x008)) != 2) fail("not a block device");
    mmio_write(REG(0x070), 0);
    mmio_write(REG(0x070), 1);
    mmio_write(REG(0x070), 1 | 2);
    mmio_write(REG(0x014), 1);
    if (!(mmio_read(REG(0x010)) & 1)) fail("no VERSION_1");
    mmio_write(REG(0x024), 0);
    mmio_write(REG(0x020), 0);
    mmio_write(REG(0x024), 1);
    mmio_write(REG(0x020), 1);
    mmio_write(REG(0x070), 1 | 2 | 8);
    if (!(mmio_read(REG(0x070)) & 8)) fail("features refused");
    mmio_write(REG(0x030), 0);
    if (mmio_read(REG(0x034)) < QUEUE_SIZE) fail("queue too small");
    mmio_write(REG(0x038), QUEUE_SIZE);
    mmio_write(REG(0x080), (u32)(u64)descs);
    mmio_write(REG(0x084), 0);
    mmio_write(REG(0x090), (u32)(u64)&avail);
    mmio_write(REG(0x094), 0);
    mmio_write(REG(0x0a0), (u32)(u64)&used);
    mmio_write(REG(0x0a4), 0);
    mmio_write(REG(0x044), 1);
    mmio_write(REG(0x070), 1 | 2 | 8 | 4);
    if (!(mmio_read(REG(0x070)) & 4)) fail("device refused DRIVER_OK");
}

/* One request: header, an optional 512-byte data buffer, the status byte. */
static u8 request(u32 type, u64 sector, int with_data, int device_writes_data) {
    header.type = type;
    header.reserved = 0;
    header.sector = sector;
    status = 0xff;
    descs[0] = (struct desc){(u64)&header, 16, F_NEXT, 1};
    u16 last = 1;
    if (with_data) {
        descs[1] = (struct desc){(u64)data, 512, F_NEXT | (device_writes_data ? F_WRITE : 0), 2};
        last = 2;
    }
    descs[last] = (struct desc){(u64)&status, 1, F_WRITE, 0};
    avail.ring[avail.idx % QUEUE_SIZE] = 0;
    barrier();
    avail.idx++;
    barrier();
    mmio_write(REG(0x050), 0);
    while (*(volatile u16 *)&used.idx == used_seen) __asm__ volatile("pause");
    used_seen++;
    barrier();
    return status;
}

static void print_text(const char *label, const u8 *bytes, int max) {
    puts(label);
    for (int i = 0; i < max && bytes[i] && bytes[i] != '\n'; i++) putc((char)bytes[i]);
    putc('\n');
}

void guest_main(void *boot_params) {
    (void)boot_params;
    setup();
    u64 capacity = mmio_read(REG(0x100)) | ((u64)mmio_read(REG(0x104)) << 32);
    puts("capacity: "); putdec(capacity); putc('\n');
    mmio_write(REG(0x014), 0);
    puts("read-only: "); putdec(mmio_read(REG(0x010)) >> 5 & 1); putc('\n');

    memset(data, 0, sizeof data);
    puts("id status: "); putdec(request(8, 0, 1, 1)); putc('\n');
    print_text("id: ", data, 20);

    puts("read status: "); putdec(request(0, 0, 1, 1)); putc('\n');
    print_text("sector0: ", data, 64);

    memset(data, 0, sizeof data);
    memcpy(data, "written-by-the-guest\n", 21);
    puts("write status: "); putdec(request(1, 1, 1, 0)); putc('\n');
    puts("flush status: "); putdec(request(4, 0, 0, 0)); putc('\n');
    memset(data, 0, sizeof data);
    puts("read status: "); putdec(request(0, 1, 1, 1)); putc('\n');
    print_text("sector1: ", data, 64);
    puts("past-end status: "); putdec(request(0, capacity, 1, 1)); putc('\n');
    puts("block done\n");
    reset();
}
