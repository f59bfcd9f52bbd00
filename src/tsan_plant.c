/* tsan_plant — see src/tsan_plant.h. Built only with -DPIER_TSAN_PLANT_RACE=ON. */
#include "tsan_plant.h"

/* Every worker thread writes it, deliberately without an atomic or a lock. */
static unsigned long planted_wakeups;

void pier__tsan_planted_race(void) {
    planted_wakeups++;
}
