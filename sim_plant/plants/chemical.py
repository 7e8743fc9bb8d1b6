"""Exothermic CSTR: A -> B, first order, Arrhenius, cooled by a jacket.

Balances of a well-mixed liquid of volume V (level x area):

    dV/dt      = F - F_out
    d(V c)/dt  = F c_f - F_out c - k(T) c V,            k = k0 exp(-E/RT)
    rho cp V dT/dt = rho cp F (T_f - T) + (-dH) k c V - UA (T - T_j)
    rho_w cp_w V_j dT_j/dt = rho_w cp_w F_c (T_c,in - T_j) + UA (T - T_j)

The jacket is well mixed, so the coolant leaves at T_j. The design point is
80 degC with 80 % conversion; k0 follows from it. There the reaction releases
about 710 kW and the cold feed carries off only about 460 kW: the jacket takes
the rest. At a fixed coolant flow the point is stable but poorly damped (a
swing of ~2.7 h that decays over ~50 min), which is why TIC201 trims the
coolant valve FV202. Lose the coolant (valve shut, or pump P202 tripped) and
the reactor heats itself, faster as Arrhenius outruns depletion, until nearly
all of A reacts at the upper steady state, about the adiabatic rise of 96 K
above the feed: a thermal runaway to ~120 degC. The headspace is
nitrogen-padded; its pressure is the pad plus the solvent's vapour pressure
(Clausius-Clapeyron for a water-like solvent), so it follows the
temperature. FIC201 holds the feed on FV201, LIC201 the level on the outlet
valve LV201, whose flow rises with the pressure difference to the next vessel.
"""

from __future__ import annotations

import math

from sim_plant.catalog import TagSpec
from sim_plant.control import PID
from sim_plant.plants.base import OrnsteinUhlenbeck, Plant, first_order

K0C = 273.15
AREA = 2.5  # m2, reactor cross-section
RHO = 950.0  # kg/m3, reaction mixture
RHO_CP = RHO * 3.5  # kJ/(m3 K)
RHO_CP_W = 1000.0 * 4.18  # kJ/(m3 K), cooling water
DH = -8.0e4  # kJ/kmol, heat of reaction
E_R = 9000.0  # K, activation energy over R
UA = 40.0  # kW/K, jacket
V_JACKET = 0.4  # m3
FEED_MAX = 20.0  # m3/h, FV201 fully open at nominal header pressure
COOLANT_MAX = 15.0  # m3/h, FV202 fully open
CV_OUT = 18.3  # m3/h per bar^0.5, LV201 fully open
P_PAD = 1.5  # bar(a), nitrogen pad
P_DOWNSTREAM = 1.0  # bar(a), next vessel
VAPOUR_K = 4892.0  # K, dH_vap/R of a water-like solvent
T_BOIL = 373.15  # K at 1.01325 bar
VALVE_TAU = 4.0  # s
COOLANT_PUMP_TAU = 3.0  # s, flow coast-down or run-up

# The design point, and the rate constant it implies.
T_DESIGN = 80.0 + K0C
CONC_FEED = 4.0  # kmol/m3
FEED = 10.0  # m3/h
LEVEL = 2.0  # m
CONVERSION = 0.8
TAU_RES = LEVEL * AREA / (FEED / 3600.0)
K0 = CONVERSION / (TAU_RES * (1.0 - CONVERSION)) * math.exp(E_R / T_DESIGN)

A = "reactor"
_T = [
    TagSpec("TT201.TEMP", "degC", 79.0, 81.0, "reactor temperature", A, loop="TIC201", noise_sd=0.05),
    TagSpec("TIC201.SP", "degC", 75.0, 85.0, "reactor temperature setpoint", A, role="setpoint", loop="TIC201"),
    TagSpec(
        "FV202.POSITION",
        "%",
        15.0,
        50.0,
        "coolant valve position",
        A,
        role="actuator",
        loop="TIC201",
        noise_sd=0.2,
        min_reading=0.0,
    ),
    TagSpec(
        "FT202.COOLANT_FLOW", "m3/h", 2.0, 8.0, "jacket coolant flow", A, loop="TIC201", noise_sd=0.05, min_reading=0.0
    ),
    TagSpec("P202.RUNNING", "", 0.5, 1.5, "coolant pump running", A, role="status"),
    TagSpec("TT203.COOLANT_IN", "degC", 20.0, 30.0, "coolant supply temperature", A, noise_sd=0.05),
    TagSpec("TT204.COOLANT_OUT", "degC", 68.0, 78.0, "coolant return temperature", A, noise_sd=0.05),
    TagSpec("AT201.CONC_A", "kmol/m3", 0.7, 0.9, "reactant A in the reactor", A, noise_sd=0.01),
    TagSpec("FT201.FEED_FLOW", "m3/h", 9.5, 10.5, "feed flow", A, loop="FIC201", noise_sd=0.05, min_reading=0.0),
    TagSpec("FIC201.SP", "m3/h", 8.0, 12.0, "feed flow setpoint", A, role="setpoint", loop="FIC201"),
    TagSpec(
        "FV201.POSITION",
        "%",
        40.0,
        60.0,
        "feed valve position",
        A,
        role="actuator",
        loop="FIC201",
        noise_sd=0.2,
        min_reading=0.0,
    ),
    TagSpec("TT202.FEED_TEMP", "degC", 25.0, 35.0, "feed temperature", A, noise_sd=0.05),
    TagSpec("PT201.PRESSURE", "bar", 1.9, 2.1, "reactor headspace pressure (absolute)", A, noise_sd=0.005),
    TagSpec("LT201.LEVEL", "m", 1.95, 2.05, "reactor level", A, loop="LIC201", noise_sd=0.003),
    TagSpec("LIC201.SP", "m", 1.5, 2.5, "reactor level setpoint", A, role="setpoint", loop="LIC201"),
    TagSpec(
        "LV201.POSITION",
        "%",
        40.0,
        60.0,
        "reactor outlet valve position",
        A,
        role="actuator",
        loop="LIC201",
        noise_sd=0.2,
        min_reading=0.0,
    ),
    TagSpec(
        "FT203.PRODUCT_FLOW",
        "m3/h",
        9.0,
        11.0,
        "product flow out of the reactor",
        A,
        loop="LIC201",
        noise_sd=0.05,
        min_reading=0.0,
    ),
]


def clamp(value: float) -> float:
    """A valve command within its travel."""
    return min(max(value, 0.0), 100.0)


def vapour_pressure_bar(temp_k: float) -> float:
    """Solvent vapour pressure: Clausius-Clapeyron through the normal boiling point."""
    return 1.01325 * math.exp(VAPOUR_K * (1.0 / T_BOIL - 1.0 / temp_k))


class ChemicalPlant(Plant):
    """Reactor R201 with its feed, jacket cooling and level loops."""

    name = "chemical"
    TAGS = tuple(_T)
    SETPOINTS = {"TIC201.SP": 80.0, "FIC201.SP": FEED, "LIC201.SP": LEVEL}
    DISTURBANCES = 5

    def _start(self) -> None:
        dt = self.dt
        self.feed_temp_c = 30.0  # nominal feed temperature; scenarios and tests step these
        self.coolant_supply_c = 25.0  # nominal cooling-water supply temperature
        self._feed_temp = OrnsteinUhlenbeck(sd=1.0, tau_s=1800.0, dt=dt)
        self._feed_conc = OrnsteinUhlenbeck(sd=0.05, tau_s=3600.0, dt=dt)
        self._header = OrnsteinUhlenbeck(sd=0.02, tau_s=120.0, dt=dt)
        self._coolant_temp = OrnsteinUhlenbeck(sd=0.5, tau_s=1800.0, dt=dt)
        self._coolant_header = OrnsteinUhlenbeck(sd=0.02, tau_s=300.0, dt=dt)
        self.feed_temp = self.feed_temp_c + K0C
        self.feed_conc = CONC_FEED
        self.coolant_in = self.coolant_supply_c + K0C
        self.temp = T_DESIGN
        self.level = LEVEL
        self.conc = CONC_FEED * (1.0 - CONVERSION)
        self.feed = FEED
        self.product = FEED
        self.pressure = P_PAD + vapour_pressure_bar(self.temp)
        # Jacket and coolant flow that remove the design point's surplus heat.
        duty = self._reaction_kw() + RHO_CP * FEED / 3600.0 * (self.feed_temp - self.temp)
        self.jacket = self.temp - duty / UA
        self.coolant = duty / (RHO_CP_W * (self.jacket - self.coolant_in)) * 3600.0
        self.coolant_running = True
        self.coolant_valve = 100.0 * self.coolant / COOLANT_MAX
        self.feed_valve = 100.0 * FEED / FEED_MAX
        self.outlet_valve = 100.0 * FEED / (CV_OUT * math.sqrt(self._outlet_dp()))
        self.tic = PID(kp=30.0, ki=0.03, dt=dt, action="direct", pv_filter_s=2.0)
        self.tic.track(self.coolant_valve, self.temp - K0C)
        self.fic = PID(kp=1.0, ki=0.3, dt=dt, action="reverse")
        self.fic.track(self.feed_valve, FEED)
        self.lic = PID(kp=150.0, ki=0.125, dt=dt, action="direct")
        self.lic.track(self.outlet_valve, LEVEL)
        self._coolant_pump = 1.0
        self.heat_kw = self.heat_flows_kw()

    def _reaction_kw(self) -> float:
        return -DH * K0 * math.exp(-E_R / self.temp) * self.conc * self.level * AREA

    def _outlet_dp(self) -> float:
        """Pressure difference across LV201: headspace to next vessel, plus the liquid head."""
        return max(self.pressure - P_DOWNSTREAM + RHO * 9.81 * self.level / 1e5, 0.0)

    def heat_flows_kw(self) -> dict[str, float]:
        """The reactor's heat flows now: released by reaction, carried by the feed, taken by the jacket.

        ``reaction + feed - jacket`` is what heats the reactor contents: its sign is the sign of dT/dt.
        """
        return {
            "reaction": self._reaction_kw(),
            "feed": RHO_CP * self.feed / 3600.0 * (self.feed_temp - self.temp),
            "jacket": UA * (self.temp - self.jacket),
        }

    def _advance(self, z: list[float]) -> None:
        dt = self.dt
        sp = self.setpoints
        # Controllers scan the last readings.
        coolant_cmd = self.command("FV202.POSITION", self.tic.update(sp["TIC201.SP"], self.pv("TT201.TEMP")))
        feed_cmd = self.command("FV201.POSITION", self.fic.update(sp["FIC201.SP"], self.pv("FT201.FEED_FLOW")))
        outlet_cmd = self.command("LV201.POSITION", self.lic.update(sp["LIC201.SP"], self.pv("LT201.LEVEL")))
        self.coolant_running = self.command("P202.RUNNING", 1.0) >= 0.5

        # Valves stroke, pumps run up or coast down; flows follow.
        self.coolant_valve = first_order(self.coolant_valve, clamp(coolant_cmd), VALVE_TAU, dt)
        self.feed_valve = first_order(self.feed_valve, clamp(feed_cmd), VALVE_TAU, dt)
        self.outlet_valve = first_order(self.outlet_valve, clamp(outlet_cmd), VALVE_TAU, dt)
        self._coolant_pump = first_order(self._coolant_pump, 1.0 if self.coolant_running else 0.0, COOLANT_PUMP_TAU, dt)
        self.coolant = (
            COOLANT_MAX * self.coolant_valve / 100.0 * self._coolant_pump * (1.0 + self._coolant_header.step(z[3]))
        )
        self.feed = FEED_MAX * self.feed_valve / 100.0 * (1.0 + self._header.step(z[2]))
        self.product = CV_OUT * self.outlet_valve / 100.0 * math.sqrt(self._outlet_dp())

        # Inlet conditions wander.
        self.feed_temp = self.feed_temp_c + K0C + self._feed_temp.step(z[0])
        self.feed_conc = CONC_FEED + self._feed_conc.step(z[1])
        diurnal = 2.0 * math.sin(2.0 * math.pi * self.t / 86400.0)
        self.coolant_in = self.coolant_supply_c + K0C + diurnal + self._coolant_temp.step(z[4])

        # Balances. Concentration is implicit in k, so a hot reactor cannot drive it negative.
        # ``heat_kw`` keeps the heat flows that drove this step, for anyone checking the balance.
        f_in, f_out = self.feed / 3600.0, self.product / 3600.0
        volume = self.level * AREA
        self.heat_kw = self.heat_flows_kw()
        k = K0 * math.exp(-E_R / self.temp)
        new_volume = max(volume + (f_in - f_out) * dt, 0.05)
        self.conc = (self.conc * volume + f_in * self.feed_conc * dt) / (new_volume * (1.0 + k * dt) + f_out * dt)
        gain = self.heat_kw["reaction"] + self.heat_kw["feed"] - self.heat_kw["jacket"]
        self.temp += dt * gain / (RHO_CP * volume)
        fc = self.coolant / 3600.0
        self.jacket += (
            dt * (RHO_CP_W * fc * (self.coolant_in - self.jacket) + self.heat_kw["jacket"]) / (RHO_CP_W * V_JACKET)
        )
        self.level = new_volume / AREA
        self.pressure = P_PAD + vapour_pressure_bar(self.temp)

    def _values(self) -> list[float]:
        sp = self.setpoints
        return [
            self.temp - K0C,
            sp["TIC201.SP"],
            self.coolant_valve,
            self.coolant,
            1.0 if self.coolant_running else 0.0,
            self.coolant_in - K0C,
            self.jacket - K0C,
            self.conc,
            self.feed,
            sp["FIC201.SP"],
            self.feed_valve,
            self.feed_temp - K0C,
            self.pressure,
            self.level,
            sp["LIC201.SP"],
            self.outlet_valve,
            self.product,
        ]


__all__ = ["ChemicalPlant", "vapour_pressure_bar"]
