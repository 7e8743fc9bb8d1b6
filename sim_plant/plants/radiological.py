"""Spent-fuel pool cooling: decay heat into a deep pool, removed through a heat exchanger.

The fuel racks give off decay heat (``decay_heat_mw``, the source term) into
about 1000 m3 of water. Primary pump P301 draws pool water through heat
exchanger HX301 (counter-flow, effectiveness-NTU) and returns it cooler;
TIC301 holds the pool temperature by opening TV302 on the secondary cooling
water. The pool also loses heat and water by evaporation to the hall air (the
Carrier-type correlation, humidity ratio of saturated air at the surface),
which LIC301 makes up through LV301. Without primary flow the pool heats at
about 1.7 K/h at 2 MW; a leak (``pool_leak_m3h``) beyond the makeup drains it.

Radiation:
- RM301, pool bridge: background, plus activity dissolved in the pool water,
  plus direct shine from the fuel through the water above it. The shine is
  ``SHINE * S * exp(-MU * (shielding - SHIELDING))`` with S the source term
  relative to nominal; MU = 5 /m is an effective attenuation (hard gammas in
  water, with build-up: a halving every ~14 cm) and SHINE, its share of the
  reading at the normal level, is a calibration, not a first-principles figure.
  One metre of water lost multiplies it by ~150: the reason pool level matters.
- RM302, heat-exchanger room, and RM303, pool hall: background plus the water's
  activity (and for RM303 a little scattered shine).
- RM310, stack: activity concentration in the exhaust, carried by evaporation.
Monitors count: each reading is a Poisson count over its integration time.
``water_activity`` scales the activity in the water (1.0 nominal; a failed fuel
pin raises it without changing the heat).
"""

from __future__ import annotations

import math

from sim_plant.catalog import TagSpec
from sim_plant.control import PID
from sim_plant.plants.base import OrnsteinUhlenbeck, Plant, first_order

AREA = 84.0  # m2, a 12 m x 7 m pool
LEVEL = 11.8  # m above the floor, normal
FUEL_TOP = 4.3  # m above the pool floor
RHO_CP = 1000.0 * 4.18  # kJ/(m3 K)
DECAY_HEAT = 2.0  # MW, nominal source term
PRIMARY_FLOW = 400.0  # m3/h, P301 running
SECONDARY_MAX = 400.0  # m3/h, TV302 fully open
MAKEUP_MAX = 10.0  # m3/h, LV301 fully open
UA_HX = 700.0  # kW/K, HX301
PUMP_TAU = 15.0  # s, P301 coast-down and run-up
OUTLET_TAU = 30.0  # s, thermal lag of HX301's outlet nozzles, pipe and thermowell
VALVE_TAU = 5.0  # s
MAKEUP_TEMP = 20.0  # degC, demineralised water
LATENT = 2420.0  # kJ/kg at pool temperature
EVAP_COEFF = 25.0 + 19.0 * 0.15  # kg/(m2 h), 0.15 m/s of air over the pool
HALL_HUMIDITY_RATIO = 0.0083  # kg/kg, 22 degC and 50 % RH
MU = 5.0  # 1/m, effective attenuation of the fuel's gammas in water
SHIELDING = LEVEL - FUEL_TOP  # m of water over the fuel at the normal level
BACKGROUND = 0.12  # uSv/h
SHINE = 0.3  # uSv/h, RM301's direct shine at the normal level and source term
WATER_BRIDGE, WATER_HX_ROOM = 1.5, 2.0  # uSv/h from the water's activity at nominal, RM301 and RM302
HALL_WATER, HALL_SHINE = 0.25, 0.1  # RM303's share of RM301's water and shine terms (farther, behind a wall)
MONITOR_MAX = 1.0e7  # uSv/h, top of a high-range area monitor's scale (10 Sv/h): it reads no higher
STACK_BACKGROUND = 5.0  # Bq/m3, radon progeny and the like
STACK_NOMINAL = 30.0  # Bq/m3, pool-water activity carried up the stack at the nominal evaporation

A = "spent_fuel_pool"
_T = [
    TagSpec("TT301.POOL_TEMP", "degC", 34.0, 36.0, "pool water temperature", A, loop="TIC301", noise_sd=0.02),
    TagSpec("TIC301.SP", "degC", 30.0, 40.0, "pool temperature setpoint", A, role="setpoint", loop="TIC301"),
    TagSpec("LT301.POOL_LEVEL", "m", 11.75, 11.85, "pool level above the floor", A, loop="LIC301", noise_sd=0.002),
    TagSpec("LIC301.SP", "m", 11.5, 12.0, "pool level setpoint", A, role="setpoint", loop="LIC301"),
    TagSpec(
        "LV301.POSITION",
        "%",
        0.0,
        10.0,
        "makeup valve position",
        A,
        role="actuator",
        loop="LIC301",
        noise_sd=0.05,
        min_reading=0.0,
    ),
    TagSpec(
        "FT303.MAKEUP_FLOW", "m3/h", 0.0, 1.0, "makeup water flow", A, loop="LIC301", noise_sd=0.01, min_reading=0.0
    ),
    TagSpec("JT301.DECAY_HEAT", "MW", 1.8, 2.2, "decay heat of the stored fuel", A, noise_sd=0.01),
    TagSpec("P301.RUNNING", "", 0.5, 1.5, "primary cooling pump running", A, role="status"),
    TagSpec("FT301.PRIMARY_FLOW", "m3/h", 390.0, 410.0, "primary flow through HX301", A, noise_sd=1.0),
    TagSpec(
        "FT302.SECONDARY_FLOW",
        "m3/h",
        70.0,
        250.0,
        "secondary cooling water flow",
        A,
        loop="TIC301",
        noise_sd=1.0,
        min_reading=0.0,
    ),
    TagSpec(
        "TV302.POSITION",
        "%",
        15.0,
        60.0,
        "secondary cooling valve position",
        A,
        role="actuator",
        loop="TIC301",
        noise_sd=0.1,
        min_reading=0.0,
    ),
    TagSpec("TT302.HX_PRIMARY_OUT", "degC", 29.0, 33.0, "pool water back from HX301", A, noise_sd=0.03),
    TagSpec("TT303.HX_SECONDARY_IN", "degC", 17.0, 27.0, "cooling water into HX301", A, noise_sd=0.03),
    TagSpec("TT304.HX_SECONDARY_OUT", "degC", 30.0, 36.0, "cooling water out of HX301", A, noise_sd=0.03),
    TagSpec("RM301.DOSE_RATE", "uSv/h", 1.2, 3.0, "gamma dose rate on the pool bridge", A, counts_per_unit=200.0),
    TagSpec(
        "RM302.DOSE_RATE", "uSv/h", 1.4, 3.4, "gamma dose rate in the heat-exchanger room", A, counts_per_unit=100.0
    ),
    TagSpec("RM303.DOSE_RATE", "uSv/h", 0.25, 0.8, "gamma dose rate at the pool hall door", A, counts_per_unit=200.0),
    TagSpec("RM310.STACK", "Bq/m3", 15.0, 60.0, "stack exhaust activity concentration", A, counts_per_unit=5.0),
]


def humidity_ratio_saturated(temp_c: float) -> float:
    """kg of water per kg of dry air over a water surface at ``temp_c`` (Magnus vapour pressure)."""
    p_sat = 0.6112 * math.exp(17.62 * temp_c / (243.12 + temp_c))  # kPa
    return 0.622 * p_sat / (101.325 - p_sat)


def evaporation_kgh(temp_c: float) -> float:
    """Evaporation from the pool surface into the hall, kg/h."""
    return max(EVAP_COEFF * AREA * (humidity_ratio_saturated(temp_c) - HALL_HUMIDITY_RATIO), 0.0)


EVAPORATION_NOMINAL = evaporation_kgh(35.0)


def hx_duty_kw(hot_in: float, cold_in: float, c_hot: float, c_cold: float) -> float:
    """Counter-flow heat exchanger duty by effectiveness-NTU; capacity rates in kW/K."""
    c_min, c_max = min(c_hot, c_cold), max(c_hot, c_cold)
    if c_min < 1e-6:
        return 0.0
    ntu, cr = UA_HX / c_min, c_min / c_max
    if cr > 0.999:
        eff = ntu / (1.0 + ntu)
    else:
        e = math.exp(-ntu * (1.0 - cr))
        eff = (1.0 - e) / (1.0 - cr * e)
    return eff * c_min * (hot_in - cold_in)


class RadiologicalPlant(Plant):
    """Spent-fuel pool SFP301 with its cooling train, makeup and radiation monitors."""

    name = "radiological"
    TAGS = tuple(_T)
    SETPOINTS = {"TIC301.SP": 35.0, "LIC301.SP": LEVEL}
    DISTURBANCES = 3

    def _start(self) -> None:
        dt = self.dt
        self.decay_heat_mw = DECAY_HEAT  # the source term; scenarios may change it
        self.water_activity = 1.0
        self.pool_leak_m3h = 0.0
        self._secondary_temp = OrnsteinUhlenbeck(sd=0.5, tau_s=3600.0, dt=dt)
        self._supply = OrnsteinUhlenbeck(sd=0.02, tau_s=300.0, dt=dt)
        self._heat_noise = OrnsteinUhlenbeck(sd=0.005, tau_s=3600.0, dt=dt)
        self.temp = self.setpoints["TIC301.SP"]
        self.level = self.setpoints["LIC301.SP"]
        self.secondary_in = 22.0
        self.pump_running = True
        self.primary = PRIMARY_FLOW
        self.heat_kw = 1000.0 * DECAY_HEAT
        self.evaporation = evaporation_kgh(self.temp)
        self.makeup = self.evaporation / 1000.0
        self.makeup_valve = 100.0 * self.makeup / MAKEUP_MAX
        self.secondary = self._secondary_for(self.heat_kw - self.evaporation / 3600.0 * LATENT)
        self.secondary_valve = 100.0 * self.secondary / SECONDARY_MAX
        self._temperatures()
        self.primary_out, self.secondary_out = self._outlets
        self.tic = PID(kp=400.0, ki=0.05, dt=dt, action="direct", pv_filter_s=10.0)
        self.tic.track(self.secondary_valve, self.temp)
        self.lic = PID(kp=3000.0, ki=0.1, dt=dt, action="reverse", pv_filter_s=10.0)
        self.lic.track(self.makeup_valve, self.level)

    def _secondary_for(self, duty_kw: float) -> float:
        """Secondary flow (m3/h) at which HX301 removes ``duty_kw``: the steady state, by bisection."""
        lo, hi = 0.0, SECONDARY_MAX
        c_hot = RHO_CP * self.primary / 3600.0
        for _ in range(60):
            mid = 0.5 * (lo + hi)
            if hx_duty_kw(self.temp, self.secondary_in, c_hot, RHO_CP * mid / 3600.0) < duty_kw:
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    def _temperatures(self) -> None:
        """HX duty for the current flows, and the outlet temperatures it would settle to."""
        c_hot, c_cold = RHO_CP * self.primary / 3600.0, RHO_CP * self.secondary / 3600.0
        self.hx_kw = hx_duty_kw(self.temp, self.secondary_in, c_hot, c_cold)
        # A stagnant side drifts to the other side's inlet temperature, as still water in a cooled HX does.
        self._outlets = (
            self.temp - self.hx_kw / c_hot if c_hot > 1.0 else self.secondary_in,
            self.secondary_in + self.hx_kw / c_cold if c_cold > 1.0 else self.temp,
        )

    def dose_rates(self) -> tuple[float, float, float]:
        """Expected readings (uSv/h) of RM301, RM302 and RM303 for the current source term and level."""
        source = self.decay_heat_mw / DECAY_HEAT
        water = source * self.water_activity
        shine = SHINE * source * math.exp(-MU * (max(self.level - FUEL_TOP, 0.0) - SHIELDING))
        return (
            min(BACKGROUND + WATER_BRIDGE * water + shine, MONITOR_MAX),
            min(BACKGROUND + WATER_HX_ROOM * water, MONITOR_MAX),
            min(BACKGROUND + HALL_WATER * WATER_BRIDGE * water + HALL_SHINE * shine, MONITOR_MAX),
        )

    def stack_concentration(self) -> float:
        """Expected RM310 reading (Bq/m3): the water's activity, carried off with the evaporation."""
        carried = self.evaporation / EVAPORATION_NOMINAL
        return STACK_BACKGROUND + STACK_NOMINAL * self.decay_heat_mw / DECAY_HEAT * self.water_activity * carried

    def _advance(self, z: list[float]) -> None:
        dt = self.dt
        sp = self.setpoints
        valve_cmd = self.command("TV302.POSITION", self.tic.update(sp["TIC301.SP"], self.pv("TT301.POOL_TEMP")))
        makeup_cmd = self.command("LV301.POSITION", self.lic.update(sp["LIC301.SP"], self.pv("LT301.POOL_LEVEL")))
        self.pump_running = self.command("P301.RUNNING", 1.0) >= 0.5

        self.secondary_valve = first_order(self.secondary_valve, min(max(valve_cmd, 0.0), 100.0), VALVE_TAU, dt)
        self.makeup_valve = first_order(self.makeup_valve, min(max(makeup_cmd, 0.0), 100.0), VALVE_TAU, dt)
        self.primary = first_order(self.primary, PRIMARY_FLOW if self.pump_running else 0.0, PUMP_TAU, dt)
        self.secondary = SECONDARY_MAX * self.secondary_valve / 100.0 * (1.0 + self._supply.step(z[1]))
        self.makeup = MAKEUP_MAX * self.makeup_valve / 100.0
        diurnal = 2.0 * math.sin(2.0 * math.pi * self.t / 86400.0)
        self.secondary_in = 22.0 + diurnal + self._secondary_temp.step(z[0])
        self.heat_kw = 1000.0 * self.decay_heat_mw * (1.0 + self._heat_noise.step(z[2]))
        self._temperatures()
        self.primary_out = first_order(self.primary_out, self._outlets[0], OUTLET_TAU, dt)
        self.secondary_out = first_order(self.secondary_out, self._outlets[1], OUTLET_TAU, dt)

        # Energy and water balances of the pool.
        self.evaporation = evaporation_kgh(self.temp)
        evap_kw = self.evaporation / 3600.0 * LATENT
        makeup_kw = RHO_CP * self.makeup / 3600.0 * (MAKEUP_TEMP - self.temp)
        volume = self.level * AREA
        self.temp += dt * (self.heat_kw - self.hx_kw - evap_kw + makeup_kw) / (RHO_CP * volume)
        outflow = self.evaporation / 1000.0 + self.pool_leak_m3h
        self.level = max(volume + dt / 3600.0 * (self.makeup - outflow), 0.0) / AREA

    def _values(self) -> list[float]:
        sp = self.setpoints
        rm301, rm302, rm303 = self.dose_rates()
        return [
            self.temp,
            sp["TIC301.SP"],
            self.level,
            sp["LIC301.SP"],
            self.makeup_valve,
            self.makeup,
            self.heat_kw / 1000.0,
            1.0 if self.pump_running else 0.0,
            self.primary,
            self.secondary,
            self.secondary_valve,
            self.primary_out,
            self.secondary_in,
            self.secondary_out,
            rm301,
            rm302,
            rm303,
            self.stack_concentration(),
        ]


__all__ = ["RadiologicalPlant", "humidity_ratio_saturated", "hx_duty_kw"]
