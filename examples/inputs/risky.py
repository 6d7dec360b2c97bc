import pickle
import subprocess


def load_profile(blob):
    return pickle.loads(blob)


def run(command):
    return subprocess.run(command, shell=True, check=False)


def calculate(expression):
    return eval(expression)
