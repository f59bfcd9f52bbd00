/* tsan_plant — the hook of a deliberately racy TEST build (cmake -DPIER_TSAN_PLANT_RACE=ON).
 *
 * A ThreadSanitizer build is trusted only once it has caught a race planted in the code it
 * guards. With the option, every worker's wake-up callback (worker_on_wake in server.c, run by
 * uv_run on the worker's loop) bumps one counter shared by all workers, with no atomic and no
 * lock: the test tsan.planted_race expects the tsan preset to report it. Without the option the
 * hook is nothing, and no code of src/tsan_plant.c is built.
 */
#ifndef PIER__TSAN_PLANT_H
#define PIER__TSAN_PLANT_H

#ifdef PIER_TSAN_PLANT_RACE
void pier__tsan_planted_race(void);
#define PIER__TSAN_PLANTED_RACE() pier__tsan_planted_race()
#else
#define PIER__TSAN_PLANTED_RACE() ((void)0)
#endif

#endif
