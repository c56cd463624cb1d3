/* A minimal virtio-mmio network driver (virtio 1.2 §5.1): it finds the NIC at
 * 0xd0000000, reads its MAC, posts receive buffers on queue 0 and sends a broadcast frame
 * (EtherType 0x88b5, "local experimental") on queue 1, again now and then, until a frame
 * of that type arrives; it prints that frame's payload on COM1 and resets. */
#include "guest.h"

#define BASE 0xd0000000UL
#define REG(offset) (BASE + (offset))
#define QUEUE_SIZE 8
#define F_NEXT 1
#define F_WRITE 2
#define HEADER 12
#define BUFFER 2048

struct desc { u64 addr; u32 len; u16 flags; u16 next; };
struct avail { u16 flags; u16 idx; u16 ring[QUEUE_SIZE]; u16 used_event; };
struct used_elem { u32 id; u32 len; };
struct used { u16 flags; u16 idx; struct used_elem ring[QUEUE_SIZE]; u16 avail_event; };
struct queue {
    struct desc descs[QUEUE_SIZE] __attribute__((aligned(16)));
    struct avail avail __attribute__((aligned(2)));
    struct used used __attribute__((aligned(4)));
    u16 used_seen;
};

static struct queue rx, tx;
static u8 rx_buffers[QUEUE_SIZE][BUFFER];
static u8 tx_buffer[BUFFER];
static u8 mac[6];

static void fail(const char *why) {
    puts("net: ");
    puts(why);
    putc('\n');
    reset();
}

static void setup_queue(u32 index, struct queue *q) {
    mmio_write(REG(0x030), index);
    if (mmio_read(REG(0x034)) < QUEUE_SIZE) fail("queue too small");
    mmio_write(REG(0x038), QUEUE_SIZE);
    mmio_write(REG(0x080), (u32)(u64)q->descs);
    mmio_write(REG(0x084), 0);
    mmio_write(REG(0x090), (u32)(u64)&q->avail);
    mmio_write(REG(0x094), 0);
    mmio_write(REG(0x0a0), (u32)(u64)&q->used);
    mmio_write(REG(0x0a4), 0);
    mmio_write(REG(0x044), 1);
}

static void post(struct queue *q, u16 index, void *buffer, u32 len, u16 flags) {
    q->descs[index] = (struct desc){(u64)buffer, len, flags, 0};
    q->avail.ring[q->avail.idx % QUEUE_SIZE] = index;
    barrier();
    q->avail.idx++;
    barrier();
}

static void send(void) {
    static const char payload[] = "gitvisor-net-tx";
    memset(tx_buffer, 0, HEADER);
    u8 *frame = tx_buffer + HEADER;
    memset(frame, 0xff, 6);
    memcpy(frame + 6, mac, 6);
    frame[12] = 0x88;
    frame[13] = 0xb5;
    memcpy(frame + 14, payload, sizeof payload - 1);
    post(&tx, 0, tx_buffer, HEADER + 14 + sizeof payload - 1, 0);
    mmio_write(REG(0x050), 1);
}

void guest_main(void *boot_params) {
    (void)boot_params;
    if (mmio_read(REG(0x000)) != 0x74726976 || mmio_read(REG(0x004)) != 2) fail("no virtio-mmio device");
    if (mmio_read(REG(0x008)) != 1) fail("not a network device");
    mmio_write(REG(0x070), 0);
    mmio_write(REG(0x070), 1);
    mmio_write(REG(0x070), 1 | 2);
    mmio_write(REG(0x014), 0);
    if (!(mmio_read(REG(0x010)) & (1 << 5))) fail("no MAC feature");
    mmio_write(REG(0x024), 0);
    mmio_write(REG(0x020), 1 << 5);
    mmio_write(REG(0x024), 1);
    mmio_write(REG(0x020), 1);
    mmio_write(REG(0x070), 1 | 2 | 8);
    if (!(mmio_read(REG(0x070)) & 8)) fail("features refused");
    setup_queue(0, &rx);
    setup_queue(1, &tx);
    mmio_write(REG(0x070), 1 | 2 | 8 | 4);
    for (int i = 0; i < 6; i++) mac[i] = *(volatile u8 *)(REG(0x100) + i);
    puts("mac:");
    for (int i = 0; i < 6; i++) { putc(' '); puthex(mac[i]); }
    putc('\n');

    for (u16 i = 0; i < QUEUE_SIZE; i++) post(&rx, i, rx_buffers[i], BUFFER, F_WRITE);
    mmio_write(REG(0x050), 0);

    u64 spins = 0;
    send();
    for (;;) {
        while (*(volatile u16 *)&rx.used.idx != rx.used_seen) {
            struct used_elem elem = rx.used.ring[rx.used_seen % QUEUE_SIZE];
            rx.used_seen++;
            u8 *frame = rx_buffers[elem.id] + HEADER;
            u32 len = elem.len - HEADER;
            if (len > 14 && frame[12] == 0x88 && frame[13] == 0xb5) {
                puts("rx: ");
                for (u32 i = 14; i < len && frame[i] >= 0x20 && frame[i] < 0x7f; i++) putc((char)frame[i]);
                putc('\n');
                reset();
            }
            post(&rx, (u16)elem.id, rx_buffers[elem.id], BUFFER, F_WRITE);
            mmio_write(REG(0x050), 0);
        }
        if (++spins % 200000 == 0 && *(volatile u16 *)&tx.used.idx == tx.avail.idx) send();
        __asm__ volatile("pause");
    }
}
